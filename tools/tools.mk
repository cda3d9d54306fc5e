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
