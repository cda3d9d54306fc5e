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
