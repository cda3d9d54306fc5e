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
