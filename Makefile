# vramseal — make help lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO       ?= go
# go-nvml's cgo code calls NVML functions that NVML's header marks
# deprecated: without this every build of the agent, its tests and the demo
# prints some 200 lines of C compiler warnings. Go's default flags are kept.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
BIN      := bin/vramseal-agent
PKGS     := ./...
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w \
	-X github.com/prometheus/common/version.Version=$(VERSION) \
	-X github.com/prometheus/common/version.Revision=$(REVISION) \
	-X github.com/prometheus/common/version.Branch=main

# Test tools are built with the Go toolchain, pinned, into a cache outside
# the tree so a second run reuses them (tools/tools.mk).
TOOLS_CACHE ?= $(HOME)/.cache/vramseal/tools
include tools/tools.mk

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/vramseal-agent (needs Go and a C compiler for NVML; CGO_ENABLED=0 builds without NVML).
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/agent

# The end-to-end test of dashboards and alerts against the running agent
# (tools/e2e) needs the agent's /metrics collectors; AGENT_E2E=1 builds the
# agent first and runs it.
AGENT_E2E ?= 1
ifeq ($(AGENT_E2E),1)
test: build
export VRAMSEAL_AGENT_E2E := 1
export VRAMSEAL_AGENT_BIN := $(abspath $(BIN))
endif

# Test-only modules under tools/ (kept out of the agent's go.mod).
TOOL_MODULES := tools/promqlcheck tools/k8scheck

# Under make test a test that lacks a tool, root or a kernel feature fails
# instead of skipping (internal/testenv); only tests that need a real GPU may
# skip, and gotestsum lists every skipped test with its reason at the end.
test: export VRAMSEAL_REQUIRE_TOOLS := 1

.PHONY: test
test: tools ## vet, gofmt, the race detector over every test, and the tests with real tools.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	$(GOTESTSUM) --format pkgname -- -race -count=1 -timeout 30m $(PKGS)
	@for m in $(TOOL_MODULES); do echo "== $$m"; (cd $$m && $(GO) mod tidy -diff > /dev/null || { echo "$$m: go.mod is stale (it follows the agent's module): run 'cd $$m && go mod tidy'"; exit 1; }; $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...) || exit 1; done

.PHONY: lint
lint: ## gofmt and go vet.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 20s).
	$(GO) test -run '^$$' -fuzz '^FuzzCheckShardID$$' -fuzztime $(or $(FUZZTIME),20s) ./sealer
	$(GO) test -run '^$$' -fuzz '^FuzzTreeDigest$$' -fuzztime $(or $(FUZZTIME),20s) ./sealer
	$(GO) test -run '^$$' -fuzz '^FuzzParseSeal$$' -fuzztime $(or $(FUZZTIME),20s) ./sealer
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),20s) ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime $(or $(FUZZTIME),20s) ./internal/control
	$(GO) test -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(or $(FUZZTIME),20s) ./internal/control
	$(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime $(or $(FUZZTIME),20s) ./internal/wire
	$(GO) test -run '^$$' -fuzz '^FuzzParseComputeCapability$$' -fuzztime $(or $(FUZZTIME),20s) ./sealer
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeBody$$' -fuzztime $(or $(FUZZTIME),20s) ./audit/spool
	$(GO) test -run '^$$' -fuzz '^FuzzScanFrames$$' -fuzztime $(or $(FUZZTIME),20s) ./audit/spool
	$(GO) test -run '^$$' -fuzz '^FuzzReadCopy$$' -fuzztime $(or $(FUZZTIME),20s) ./audit/otel
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),20s) ./alerts
	$(GO) test -run '^$$' -fuzz '^FuzzParseModel$$' -fuzztime $(or $(FUZZTIME),20s) ./dashboards
	cd tools/promqlcheck && $(GO) test -run '^$$' -fuzz '^FuzzMetricNames$$' -fuzztime $(or $(FUZZTIME),20s) .

.PHONY: bench
bench: build ## Benchmarks, each beside its baseline in the same run (see README, Performance).
	./scripts/bench.sh

.PHONY: run
run: build ## The demo on simulated GPUs.
	./scripts/demo.sh

.PHONY: generate
generate: generate-ptx ## Regenerate committed generated files (PTX, docs/metrics.md, dashboards JSON, the Helm chart's values schema, rules and dashboards).
	$(GO) run ./collector/internal/metricsdoc -o docs/metrics.md
	$(GO) run ./dashboards/cmd/render -out dashboards/json
	$(GO) run ./deploy/cmd/render -dir deploy

.PHONY: generate-ptx
generate-ptx: ## Regenerate the GPU leaf kernel's PTX (sealer/cuda/sha256_leaves.ptx) from its Go generator.
	$(GO) run ./sealer/cuda/internal/ptxgen/cmd/ptxgen -o sealer/cuda/sha256_leaves.ptx

# The GPU check: binaries built here (where Go is), run on a GPU machine
# (where only the driver is). cgo-free builds (purego) depend on no C library
# version; the sealer/cuda tests are also built with cgo, as the agent is
# (they need glibc 2.34 or newer), and so is a package needing cgo (NVML).
GPU_CHECK_DIR := .gpu-check
GPU_CHECK_PKGS := ./collector ./internal/nvml

.PHONY: gpu-check-build
gpu-check-build: ## Build the GPU check's test binaries and benchmark into .gpu-check/ (linux/amd64).
	rm -rf $(GPU_CHECK_DIR) && mkdir -p $(GPU_CHECK_DIR)
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) test -c -trimpath -ldflags '-s -w' -o $(GPU_CHECK_DIR)/cuda.test ./sealer/cuda
	CGO_ENABLED=1 GOOS=linux GOARCH=amd64 $(GO) test -c -trimpath -ldflags '-s -w' -o $(GPU_CHECK_DIR)/cuda-cgo.test ./sealer/cuda
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) test -c -trimpath -ldflags '-s -w' -o $(GPU_CHECK_DIR)/policy.test ./policy
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '-s -w' -o $(GPU_CHECK_DIR)/gpucheck ./sealer/cuda/internal/gpucheck
	for p in $(GPU_CHECK_PKGS); do \
		if ls $$p/*_test.go >/dev/null 2>&1; then \
			n=$$(basename $$p); \
			GOOS=linux GOARCH=amd64 $(GO) test -c -trimpath -ldflags '-s -w' -o $(GPU_CHECK_DIR)/$$n.test $$p && echo $${p#./} > $(GPU_CHECK_DIR)/$$n.dir; \
		fi; \
	done
	@du -sh $(GPU_CHECK_DIR)

.PHONY: gpu-check
gpu-check: ## On a GPU machine (driver, no Go): run the prebuilt GPU tests and the throughput table (docs/gpu.md).
	./scripts/gpu-check.sh

# Release artefacts in dist/: the agent for linux/amd64 and linux/arm64 (cgo,
# for NVML; arm64 with Debian's cross gcc), an SBOM of each (CycloneDX JSON
# from the modules Go records in the binary), a .deb of each (nfpm:
# deploy/nfpm.yaml), the OCI image layout of both (tools/image, no container engine)
# and SHA256SUMS. The arm64 binary is smoke-tested under qemu-user-static
# (`version`, and `digest` equal to the amd64 binary's).
DIST        := dist
DIST_ARCHES := amd64 arm64
# A Debian version: v1.2.3 → 1.2.3, anything else (a commit id) →
# 0.0.0~git<describe>.
DIST_VERSION := $(shell v='$(VERSION)'; v=$${v#v}; case "$$v" in ([0-9]*.[0-9]*) echo "$$v";; (*) echo "0.0.0~git$$v" | tr -- '-' '.';; esac)
DIST_SRC    := $(shell git ls-files 'go.mod' 'go.sum' '*.go' 2>/dev/null | grep -v '^tools/')
DIST_DEB     = $(DIST)/vramseal-agent_$(DIST_VERSION)_$(1).deb
DIST_IMAGE  := $(DIST)/vramseal-agent-image
# The commit's time: the SBOMs, packages and image carry it, not the build's.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH

# Rebuilt when a Go source, the version or the revision changed.
$(DIST)/.stamp-$(DIST_VERSION)-$(REVISION):
	mkdir -p $(DIST) && rm -f $(DIST)/.stamp-* && touch $@

$(DIST)/vramseal-agent-linux-amd64: $(DIST_SRC) $(DIST)/.stamp-$(DIST_VERSION)-$(REVISION)
	CGO_ENABLED=1 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/agent

$(DIST)/vramseal-agent-linux-arm64: $(DIST_SRC) $(DIST)/.stamp-$(DIST_VERSION)-$(REVISION) | cross-arm64
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$(CC_ARM64) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/agent

$(DIST)/vramseal-agent-linux-%.cdx.json: $(DIST)/vramseal-agent-linux-% | $(CYCLONEDX_GOMOD)
	$(CYCLONEDX_GOMOD) bin -json -noserial -output $@ -version $(VERSION) $<

# The packaged unit runs the binary where the package puts it.
$(DIST)/pkg/vramseal-agent.service: deploy/systemd/vramseal-agent.service
	mkdir -p $(@D) && sed 's#/usr/local/bin/vramseal-agent#/usr/bin/vramseal-agent#' $< > $@

$(DIST)/vramseal-agent_$(DIST_VERSION)_%.deb: $(DIST)/vramseal-agent-linux-% $(DIST)/pkg/vramseal-agent.service deploy/nfpm.yaml $(wildcard deploy/systemd/* deploy/debian/*) | $(NFPM)
	rm -f $(filter-out $@,$(wildcard $(DIST)/vramseal-agent_*_$*.deb)) # one version in dist/
	sed 's/$${DEB_ARCH}/$*/g' deploy/nfpm.yaml > $(DIST)/pkg/nfpm-$*.yaml # nfpm expands no variables in contents
	DEB_ARCH=$* DIST_VERSION='$(DIST_VERSION)' $(NFPM) package --config $(DIST)/pkg/nfpm-$*.yaml --packager deb --target $@ > /dev/null

.PHONY: deb
deb: $(call DIST_DEB,amd64) ## Build the amd64 .deb into dist/ (make test installs it).

.PHONY: image
image: $(foreach a,$(DIST_ARCHES),$(DIST)/vramseal-agent-linux-$(a) $(call LIBC6_TAR,$(a))) ## Build the OCI image layout (linux/amd64 and linux/arm64) into dist/, without a container engine.
	cd tools/image && $(GO) run . -out $(abspath $(DIST_IMAGE)) -packages 'libc6=$(LIBC6_VERSION)' -version '$(VERSION)' -revision '$(REVISION)' \
		$(foreach a,$(DIST_ARCHES),-platform $(a)=$(abspath $(DIST)/vramseal-agent-linux-$(a)),$(call LIBC6_TAR,$(a)))

.PHONY: dist-smoke
dist-smoke: $(DIST)/vramseal-agent-linux-amd64 $(DIST)/vramseal-agent-linux-arm64 $(call LIBC6_TAR,arm64) | cross-arm64 ## Run the arm64 binary under qemu-user-static (version, digest; and with the arm64 image's libraries).
	@f=$$(mktemp) && trap 'rm -f $$f' EXIT && head -c 1000000 /dev/urandom > $$f && \
	test "$$(od -An -tx1 -j18 -N2 $(DIST)/vramseal-agent-linux-arm64 | tr -d ' ')" = b700 || { echo "not an arm64 (aarch64) ELF binary"; exit 1; }; \
	$(QEMU_ARM64) -L $(ARM64_SYSROOT) $(DIST)/vramseal-agent-linux-arm64 version && \
	want=$$($(DIST)/vramseal-agent-linux-amd64 digest --leaf-size 4096 $$f) && \
	got=$$($(QEMU_ARM64) -L $(ARM64_SYSROOT) $(DIST)/vramseal-agent-linux-arm64 digest --leaf-size 4096 $$f) && \
	echo "$$got" && test "$$got" = "$$want" && echo "arm64 under qemu: digest equals amd64's"
	cd tools/image && VRAMSEAL_REQUIRE_TOOLS=1 VRAMSEAL_AGENT_BIN_ARM64=$(abspath $(DIST)/vramseal-agent-linux-arm64) \
		VRAMSEAL_LIBC6_TAR_ARM64=$(call LIBC6_TAR,arm64) VRAMSEAL_QEMU_ARM64=$$(command -v $(QEMU_ARM64)) \
		$(GO) test -count=1 -v -run '^TestImageRunsTheAgentArm64$$' . | grep -E '^(--- |ok)|arm64 image:'

.PHONY: dist
dist: $(foreach a,$(DIST_ARCHES),$(DIST)/vramseal-agent-linux-$(a) $(DIST)/vramseal-agent-linux-$(a).cdx.json $(call DIST_DEB,$(a))) image dist-smoke ## Release artefacts into dist/: binaries (amd64, arm64), SBOMs, .debs, the OCI image, SHA256SUMS.
	cd $(DIST) && sha256sum $(foreach a,$(DIST_ARCHES),vramseal-agent-linux-$(a) vramseal-agent-linux-$(a).cdx.json $(notdir $(call DIST_DEB,$(a)))) > SHA256SUMS
	cat $(DIST)/SHA256SUMS

# make test installs the .deb (deploy/package_test.go) and checks the image
# (tools/image).
test: deb
export VRAMSEAL_DEB := $(abspath $(call DIST_DEB,amd64))
TOOL_MODULES += tools/image
