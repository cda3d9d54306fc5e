package metricstest_test

import (
	"os"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/collector/metricstest"
)

const doc = "| metric | type | labels | help |\n| --- | --- | --- | --- |\n" +
	"| `vramseal_sealed_bytes` | gauge | `gpu` | Bytes. |\n" +
	"| `vramseal_shard_last_verified_timestamp_seconds` | gauge | `gpu`, `shard_id` | When. |\n" +
	"| `vramseal_build_info` | gauge | — | Build. |\n" +
	"| `vramseal_verification_duration_seconds` | histogram | `gpu` | How long. |\n"

func TestCheckDocumented(t *testing.T) {
	if err := metricstest.CheckDocumented(strings.NewReader(run1), strings.NewReader(doc), "vramseal_"); err != nil {
		t.Fatal(err)
	}
	missing := strings.Replace(doc, "| `vramseal_sealed_bytes` | gauge | `gpu` | Bytes. |\n", "", 1)
	err := metricstest.CheckDocumented(strings.NewReader(run1), strings.NewReader(missing), "vramseal_")
	if err == nil || !strings.Contains(err.Error(), "vramseal_sealed_bytes is served but not documented") {
		t.Errorf("undocumented metric: %v", err)
	}
	wrongType := strings.Replace(doc, "| `vramseal_sealed_bytes` | gauge", "| `vramseal_sealed_bytes` | counter", 1)
	err = metricstest.CheckDocumented(strings.NewReader(run1), strings.NewReader(wrongType), "vramseal_")
	if err == nil || !strings.Contains(err.Error(), "served as a gauge but documented as a counter") {
		t.Errorf("wrong type: %v", err)
	}
}

// TestRepositoryDocsParse checks that the committed docs/metrics.md has the
// table Documented reads.
func TestRepositoryDocsParse(t *testing.T) {
	f, err := os.Open("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := metricstest.Documented(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) < 30 || d["vramseal_verification_duration_seconds"] != "histogram" || d["vramseal_seals_total"] != "counter" {
		t.Errorf("docs/metrics.md table: %d rows, %v", len(d), d)
	}
}
