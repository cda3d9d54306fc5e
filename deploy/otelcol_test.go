package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/vramseal/vramseal/internal/testenv"
)

const auditPipeline = "otel-collector/audit-pipeline.yaml"

// TestAuditPipelineValidates: the real collector that make test builds
// accepts the shipped audit pipeline.
func TestAuditPipelineValidates(t *testing.T) {
	otelcol := testenv.Tool(t, "VRAMSEAL_OTELCOL")
	queue := t.TempDir()
	cmd := exec.Command(otelcol, "validate", "--config=file:"+auditPipeline,
		"--set=extensions::file_storage/audit::directory="+queue,
		"--set=extensions::file_storage/audit::compaction::directory="+queue)
	cmd.Env = append(os.Environ(), "AUDIT_BACKEND_ENDPOINT=127.0.0.1:4317", "AUDIT_BACKEND_CA=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the collector refuses %s: %v\n%s", auditPipeline, err, out)
	}
}

// TestAuditPipelineKeepsEveryRecord: on the audit logs pipeline nothing
// samples, filters or limits, and the queue is persistent and retries for
// ever.
func TestAuditPipelineKeepsEveryRecord(t *testing.T) {
	data, err := os.ReadFile(filepath.FromSlash(auditPipeline))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Exporters map[string]struct {
			SendingQueue struct {
				Enabled bool   `yaml:"enabled"`
				Storage string `yaml:"storage"`
			} `yaml:"sending_queue"`
			Retry struct {
				Enabled        bool   `yaml:"enabled"`
				MaxElapsedTime string `yaml:"max_elapsed_time"`
			} `yaml:"retry_on_failure"`
		} `yaml:"exporters"`
		Service struct {
			Extensions []string `yaml:"extensions"`
			Pipelines  map[string]struct {
				Processors []string `yaml:"processors"`
				Exporters  []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	logs, ok := cfg.Service.Pipelines["logs/audit"]
	if !ok {
		t.Fatal("no logs/audit pipeline")
	}
	for _, p := range logs.Processors {
		if !strings.HasPrefix(p, "batch") {
			t.Errorf("processor %s on the audit pipeline: only batching belongs there", p)
		}
	}
	for _, e := range logs.Exporters {
		x := cfg.Exporters[e]
		if !x.SendingQueue.Enabled || x.SendingQueue.Storage == "" || !slices.Contains(cfg.Service.Extensions, x.SendingQueue.Storage) {
			t.Errorf("exporter %s: its sending queue is not persistent: %+v", e, x.SendingQueue)
		}
		if !x.Retry.Enabled || x.Retry.MaxElapsedTime != "0" {
			t.Errorf("exporter %s: retries must not give up (max_elapsed_time 0): %+v", e, x.Retry)
		}
	}
}
