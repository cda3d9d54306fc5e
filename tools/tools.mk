# Pinned test tools, built with the Go toolchain into $(TOOLS_CACHE).
PROMETHEUS_VERSION := v0.316.0
PROMETHEUS_DIR     := $(TOOLS_CACHE)/prometheus-$(PROMETHEUS_VERSION)
PROMETHEUS         := $(PROMETHEUS_DIR)/prometheus
PROMTOOL           := $(PROMETHEUS_DIR)/promtool

$(PROMETHEUS) $(PROMTOOL):
	GOBIN=$(PROMETHEUS_DIR) $(GO) install github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_VERSION) github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_VERSION)

.PHONY: tools
tools: $(PROMETHEUS) $(PROMTOOL) ## Build the pinned test tools into the cache.

# Tests find the tools through these (a test skips, saying to run
# `make test`, when its variable is unset).
export VRAMSEAL_PROMETHEUS := $(PROMETHEUS)
export VRAMSEAL_PROMTOOL   := $(PROMTOOL)

# Debian's headless Chromium, for the status page's browser test (the page
# as a browser renders it, with a screenshot checked to be non-blank).
# Installed with apt-get only when missing; root or sudo is needed then.
CHROMIUM ?= /usr/bin/chromium

.PHONY: chromium
chromium: ## Install Debian's chromium (headless) for the status page test, when missing.
	@if ! test -x $(CHROMIUM); then \
		echo "installing chromium with apt-get (for the status page test)"; \
		SUDO=; if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; \
	fi

test: chromium
export VRAMSEAL_CHROMIUM := $(CHROMIUM)

# OpenTelemetry Collector for the audit export tests: the OTLP receiver and the
# contrib file exporter (tools/otelcol/builder-config.yaml), every collector
# module at one release, built with the pinned collector builder. The builder's
# own `go mod tidy` fails on a test-only dependency of the file exporter that
# the module proxy does not serve, so the generated module is tidied with -e
# and built here. The cache folder is keyed by the config's hash.
OTELCOL_BUILDER_VERSION := v0.165.0
OTELCOL_BUILDER_DIR     := $(TOOLS_CACHE)/builder-$(OTELCOL_BUILDER_VERSION)
OTELCOL_BUILDER         := $(OTELCOL_BUILDER_DIR)/builder
OTELCOL_CONFIG          := tools/otelcol/builder-config.yaml
OTELCOL_DIR             := $(TOOLS_CACHE)/otelcol-$(OTELCOL_BUILDER_VERSION)-$(shell sha256sum $(OTELCOL_CONFIG) | cut -c1-12)
OTELCOL                 := $(OTELCOL_DIR)/otelcol-vramseal

$(OTELCOL_BUILDER):
	GOBIN=$(OTELCOL_BUILDER_DIR) $(GO) install go.opentelemetry.io/collector/cmd/builder@$(OTELCOL_BUILDER_VERSION)

$(OTELCOL): | $(OTELCOL_BUILDER)
	rm -rf $(OTELCOL_DIR)/src && mkdir -p $(OTELCOL_DIR)
	sed 's#^  output_path:.*#  output_path: $(OTELCOL_DIR)/src#' $(OTELCOL_CONFIG) > $(OTELCOL_DIR)/builder-config.yaml
	$(OTELCOL_BUILDER) --config=$(OTELCOL_DIR)/builder-config.yaml --skip-compilation > $(OTELCOL_DIR)/builder.log 2>&1 \
		|| { test -f $(OTELCOL_DIR)/src/go.mod || { cat $(OTELCOL_DIR)/builder.log; exit 1; }; }
	cd $(OTELCOL_DIR)/src && { $(GO) mod tidy -e > ../tidy.log 2>&1 || true; } && $(GO) build -trimpath -ldflags '-s -w' -o $(OTELCOL) .

.PHONY: otelcol
otelcol: $(OTELCOL) ## Build the pinned OpenTelemetry Collector for the audit tests.

# `make test` builds the collector first and hands it to the tests.
test: $(OTELCOL)
export VRAMSEAL_OTELCOL := $(abspath $(OTELCOL))

tools: $(OTELCOL)

# gotestsum runs the agent's tests in `make test` and ends with a summary that
# lists every test that skipped, with its reason (under
# VRAMSEAL_REQUIRE_TOOLS=1 only tests that need a real GPU may skip).
GOTESTSUM_VERSION := v1.13.0
GOTESTSUM_DIR     := $(TOOLS_CACHE)/gotestsum-$(GOTESTSUM_VERSION)
GOTESTSUM         := $(GOTESTSUM_DIR)/gotestsum

$(GOTESTSUM):
	GOBIN=$(GOTESTSUM_DIR) $(GO) install gotest.tools/gotestsum@$(GOTESTSUM_VERSION)

.PHONY: gotestsum
gotestsum: $(GOTESTSUM) ## Build the pinned gotestsum that make test runs the tests with.

test: $(GOTESTSUM)
tools: $(GOTESTSUM)

# systemd-analyze, for the deploy tests' `systemd-analyze verify` of the
# units, comes with Debian's systemd package: installed with apt-get only
# where the command is missing (nothing is built for it).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: systemd-analyze
systemd-analyze: ## Install systemd-analyze (Debian's systemd package) where it is missing.
	@command -v systemd-analyze > /dev/null || { \
		echo "systemd-analyze is missing: installing Debian's systemd package"; \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd; }

test: systemd-analyze
tools: systemd-analyze

# NVIDIA's PTX assembler, for the test that assembles the committed leaf
# kernel (sealer/cuda, ptxas_test.go): Debian's non-free nvidia-cuda-toolkit,
# pinned by version and sha256, downloaded with apt-get under a private
# sources list and private state and cache folders (the machine's apt setup
# is neither read for packages nor changed), unpacked with dpkg -x into the
# cache. Nothing is installed. The mirror is the first URIs: line of the
# machine's Debian sources (CUDA_TOOLKIT_MIRROR overrides it).
CUDA_TOOLKIT_VERSION := 11.8.89~11.8.0-5~deb12u1
CUDA_TOOLKIT_SHA256  := d1156026e704fe0368b6295db06224ed00a727966fb13454f34e3f3102db0457
CUDA_TOOLKIT_SUITE   := bookworm
CUDA_TOOLKIT_DIR     := $(TOOLS_CACHE)/cuda-toolkit-$(subst ~,_,$(CUDA_TOOLKIT_VERSION))
CUDA_TOOLKIT_MIRROR  ?= $(or $(shell awk '/^URIs:/ {print $$2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null),http://deb.debian.org/debian)
PTXAS                := $(CUDA_TOOLKIT_DIR)/usr/bin/ptxas

$(PTXAS):
	rm -rf $(CUDA_TOOLKIT_DIR).tmp && mkdir -p $(CUDA_TOOLKIT_DIR).tmp/apt/state/partial $(CUDA_TOOLKIT_DIR).tmp/apt/cache/archives/partial
	echo 'deb $(CUDA_TOOLKIT_MIRROR) $(CUDA_TOOLKIT_SUITE) non-free' > $(CUDA_TOOLKIT_DIR).tmp/apt/sources.list
	cd $(CUDA_TOOLKIT_DIR).tmp && apt="-o Dir::Etc::SourceList=$$PWD/apt/sources.list -o Dir::Etc::SourceParts=- \
		-o Dir::State::Lists=$$PWD/apt/state -o Dir::Cache=$$PWD/apt/cache -o Debug::NoLocking=1" && \
		apt-get -q $$apt update > apt/update.log 2>&1 || { cat apt/update.log; exit 1; }; \
		apt-get -q $$apt download 'nvidia-cuda-toolkit=$(CUDA_TOOLKIT_VERSION)' > apt/download.log 2>&1 || { cat apt/download.log; exit 1; }; \
		echo "$(CUDA_TOOLKIT_SHA256)  $$(ls nvidia-cuda-toolkit_*.deb)" | sha256sum -c --quiet - && \
		dpkg -x nvidia-cuda-toolkit_*.deb . && rm -rf apt nvidia-cuda-toolkit_*.deb
	rm -rf $(CUDA_TOOLKIT_DIR) && mv $(CUDA_TOOLKIT_DIR).tmp $(CUDA_TOOLKIT_DIR)
	$(PTXAS) --version | tail -1

.PHONY: ptxas
ptxas: $(PTXAS) ## Fetch the pinned ptxas (Debian non-free nvidia-cuda-toolkit) into the cache.

tools: $(PTXAS)
test: ptxas-check
export VRAMSEAL_PTXAS := $(PTXAS)

# The committed PTX assembled for sm_80 and sm_90, its register count
# printed, and a broken copy refused (also part of the full test run).
.PHONY: ptxas-check
ptxas-check: $(PTXAS) ## Assemble the committed leaf kernel with ptxas (sm_80, sm_90) and show its registers.
	@out=$$(VRAMSEAL_REQUIRE_TOOLS=1 $(GO) test -count=1 -v -run '^TestPTXAS' ./sealer/cuda 2>&1) || { echo "$$out"; exit 1; }; \
		echo "$$out" | grep -E '^(--- |ok)|ptxas_test.go:.*(registers|refused)'

# Debian's PyTorch (CPU) and NumPy, for the Python client's tests and the
# real PyTorch consumer (cmd/agent, python_e2e_test.go), run with Debian's
# own interpreter: the python3 first on PATH may be another one that does not
# see Debian's packages. Installed with apt-get only when the import fails.
PYTHON ?= /usr/bin/python3

.PHONY: python-torch
python-torch: ## Install Debian's python3-torch and python3-numpy for the Python client's tests, when missing.
	@$(PYTHON) -c 'import torch, numpy' 2> /dev/null || { \
		echo "installing Debian's python3-torch and python3-numpy with apt-get (for the Python client's tests)"; \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-torch python3-numpy; }

test: python-torch
tools: python-torch
export VRAMSEAL_PYTHON := $(PYTHON)

# Helm, for the chart's tests (tools/k8scheck: lint, template and strict
# decoding of every rendered object), built with the Go toolchain like the
# other tools.
HELM_VERSION := v3.22.0
HELM_DIR     := $(TOOLS_CACHE)/helm-$(HELM_VERSION)
HELM         := $(HELM_DIR)/helm

$(HELM):
	GOBIN=$(HELM_DIR) $(GO) install -trimpath -ldflags '-s -w' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

.PHONY: helm
helm: $(HELM) ## Build the pinned Helm for the chart's tests.

test: $(HELM)
tools: $(HELM)
export VRAMSEAL_HELM := $(HELM)

# Release tools for `make dist` (and the package test of `make test`):
# nfpm builds the .deb, cyclonedx-gomod writes each binary's SBOM from the
# module list Go records in it (`go version -m`); both pinned, built with the
# Go toolchain like the test tools.
NFPM_VERSION := v2.45.2
NFPM_DIR     := $(TOOLS_CACHE)/nfpm-$(NFPM_VERSION)
NFPM         := $(NFPM_DIR)/nfpm

$(NFPM):
	GOBIN=$(NFPM_DIR) $(GO) install -trimpath -ldflags '-s -w' github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

CYCLONEDX_GOMOD_VERSION := v1.10.0
CYCLONEDX_GOMOD_DIR     := $(TOOLS_CACHE)/cyclonedx-gomod-$(CYCLONEDX_GOMOD_VERSION)
CYCLONEDX_GOMOD         := $(CYCLONEDX_GOMOD_DIR)/cyclonedx-gomod

$(CYCLONEDX_GOMOD):
	GOBIN=$(CYCLONEDX_GOMOD_DIR) $(GO) install -trimpath -ldflags '-s -w' github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@$(CYCLONEDX_GOMOD_VERSION)

.PHONY: nfpm cyclonedx-gomod
nfpm: $(NFPM) ## Build the pinned nfpm (the .deb of make dist).
cyclonedx-gomod: $(CYCLONEDX_GOMOD) ## Build the pinned cyclonedx-gomod (the SBOMs of make dist).
tools: $(NFPM)

# The arm64 build (GH200 nodes) needs Debian's cross C compiler for cgo, and
# its smoke test Debian's qemu-user-static (with the cross libc of
# libc6-dev-arm64-cross): both installed with apt-get only when missing.
CC_ARM64   := aarch64-linux-gnu-gcc
QEMU_ARM64 := qemu-aarch64-static
ARM64_SYSROOT := /usr/aarch64-linux-gnu

.PHONY: cross-arm64
cross-arm64: ## Install Debian's arm64 cross compiler and qemu-user-static, when missing.
	@command -v $(CC_ARM64) > /dev/null && command -v $(QEMU_ARM64) > /dev/null || { \
		echo "installing Debian's gcc-aarch64-linux-gnu and qemu-user-static (for the arm64 build)"; \
		$(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static; }

# The image's C library: Debian's libc6 .deb for each architecture, the
# version this machine runs (the one the binaries are linked against),
# fetched with apt-get download under a private sources list and private
# state and cache folders (the machine's apt setup is neither read for
# packages nor changed), as the CUDA toolkit above, into the cache, and
# unpacked to a tar (dpkg-deb --fsys-tarfile) that becomes the image's base
# layer (tools/image). LIBC6_VERSION overrides the version.
LIBC6_VERSION ?= $(shell dpkg-query -W -f='$${Version}' libc6 2>/dev/null)
LIBC6_SUITE   := bookworm
DEBS_DIR      := $(TOOLS_CACHE)/debs
LIBC6_TAR      = $(DEBS_DIR)/libc6_$(subst :,%3a,$(LIBC6_VERSION))_$(1).tar

$(DEBS_DIR)/libc6_$(subst :,%3a,$(LIBC6_VERSION))_%.tar:
	@test -n '$(LIBC6_VERSION)' || { echo "no libc6 version (dpkg-query): set LIBC6_VERSION"; exit 1; }
	rm -rf $@.d && mkdir -p $@.d/apt/state/partial $@.d/apt/cache/archives/partial
	printf 'deb [arch=$*] %s %s main\n' $(CUDA_TOOLKIT_MIRROR) $(LIBC6_SUITE) $(CUDA_TOOLKIT_MIRROR) $(LIBC6_SUITE)-updates > $@.d/apt/sources.list
	cd $@.d && apt="-o Dir::Etc::SourceList=$$PWD/apt/sources.list -o Dir::Etc::SourceParts=- \
		-o Dir::State::Lists=$$PWD/apt/state -o Dir::Cache=$$PWD/apt/cache -o Debug::NoLocking=1 \
		-o APT::Architecture=$* -o APT::Architectures::=$*" && \
		apt-get -q $$apt update > apt/update.log 2>&1 || { cat apt/update.log; exit 1; }; \
		apt-get -q $$apt download 'libc6:$*=$(LIBC6_VERSION)' > apt/download.log 2>&1 || { cat apt/download.log; echo "set LIBC6_VERSION to a version the mirror serves"; exit 1; }; \
		dpkg-deb --fsys-tarfile libc6_*_$*.deb > $@.tmp
	mv $@.tmp $@ && rm -rf $@.d

.PHONY: libc6
libc6: $(call LIBC6_TAR,amd64) $(call LIBC6_TAR,arm64) ## Fetch Debian's libc6 (amd64, arm64: the image's C library) into the cache.
tools: $(call LIBC6_TAR,amd64)
export VRAMSEAL_LIBC6_TAR := $(call LIBC6_TAR,amd64)
