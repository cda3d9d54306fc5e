package metricstest_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/collector/metricstest"
	"github.com/vramseal/vramseal/internal/testenv"
)

const run1 = `# HELP vramseal_shard_last_verified_timestamp_seconds When.
# TYPE vramseal_shard_last_verified_timestamp_seconds gauge
vramseal_shard_last_verified_timestamp_seconds{gpu="0",shard_id="a"} 1.7e+09
vramseal_shard_last_verified_timestamp_seconds{gpu="1",shard_id="b"} 1.8e+09
# HELP vramseal_build_info Build.
# TYPE vramseal_build_info gauge
vramseal_build_info{goversion="go1.26.8",revision="abc",version="1.0.0"} 1
# HELP vramseal_sealed_bytes Bytes.
# TYPE vramseal_sealed_bytes gauge
vramseal_sealed_bytes{gpu="0"} 10000
vramseal_sealed_bytes{gpu="1"} 5000
# HELP vramseal_verification_duration_seconds How long.
# TYPE vramseal_verification_duration_seconds histogram
vramseal_verification_duration_seconds_bucket{gpu="0",le="0.01"} 1
vramseal_verification_duration_seconds_bucket{gpu="0",le="+Inf"} 1
vramseal_verification_duration_seconds_sum{gpu="0"} 0.004
vramseal_verification_duration_seconds_count{gpu="0"} 1
# HELP go_goroutines Goroutines.
# TYPE go_goroutines gauge
go_goroutines 12
`

// run2 is run1 from another run: other timestamps, durations, build and
// goroutines, series and families in another order.
const run2 = `# HELP go_goroutines Goroutines.
# TYPE go_goroutines gauge
go_goroutines 31
# HELP vramseal_build_info Build.
# TYPE vramseal_build_info gauge
vramseal_build_info{version="1.1.0",revision="def",goversion="go1.27.0"} 1
# HELP vramseal_sealed_bytes Bytes.
# TYPE vramseal_sealed_bytes gauge
vramseal_sealed_bytes{gpu="1"} 5000
vramseal_sealed_bytes{gpu="0"} 10000
# HELP vramseal_shard_last_verified_timestamp_seconds When.
# TYPE vramseal_shard_last_verified_timestamp_seconds gauge
vramseal_shard_last_verified_timestamp_seconds{shard_id="b",gpu="1"} 1.9e+09
vramseal_shard_last_verified_timestamp_seconds{gpu="0",shard_id="a"} 1.95e+09 1700000000000
# HELP vramseal_verification_duration_seconds How long.
# TYPE vramseal_verification_duration_seconds histogram
vramseal_verification_duration_seconds_bucket{gpu="0",le="0.01"} 0
vramseal_verification_duration_seconds_bucket{gpu="0",le="+Inf"} 1
vramseal_verification_duration_seconds_sum{gpu="0"} 0.2
vramseal_verification_duration_seconds_count{gpu="0"} 1
`

func mask(t *testing.T, s string) string {
	t.Helper()
	b, err := metricstest.Mask(strings.NewReader(s), metricstest.DefaultRules)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSamples(t *testing.T) {
	text := "# HELP a A.\n# TYPE a gauge\na 1\n\na{x=\"#\"} 2\nb 3"
	if got := metricstest.Samples(text); got != 3 {
		t.Errorf("Samples = %d, want 3", got)
	}
}

func TestMaskIsStableAcrossRuns(t *testing.T) {
	a, b := mask(t, run1), mask(t, run2)
	if a != b {
		t.Fatalf("masked runs differ:\n--- run1\n%s--- run2\n%s", a, b)
	}
	if got, want := metricstest.Samples(a), metricstest.Samples(run1); got != want {
		t.Errorf("masked output has %d samples, input %d:\n%s", got, want, a)
	}
	for _, keep := range []string{
		`vramseal_sealed_bytes{gpu="0"} 10000`,
		`vramseal_sealed_bytes{gpu="1"} 5000`,
		`vramseal_build_info{goversion="MASKED",revision="MASKED",version="MASKED"} 1`,
		`vramseal_shard_last_verified_timestamp_seconds{gpu="0",shard_id="a"} NaN`,
		`vramseal_verification_duration_seconds_bucket{gpu="0",le="0.01"} NaN`,
		`go_goroutines NaN`,
	} {
		if !strings.Contains(a, keep+"\n") {
			t.Errorf("masked output lacks %q:\n%s", keep, a)
		}
	}
}

func TestMaskKeepsMeaningfulDifferences(t *testing.T) {
	changed := strings.Replace(run1, `vramseal_sealed_bytes{gpu="1"} 5000`, `vramseal_sealed_bytes{gpu="1"} 0`, 1)
	if mask(t, changed) == mask(t, run1) {
		t.Error("a changed sealed_bytes value was masked away")
	}
	extra := run1 + "# TYPE vramseal_new gauge\nvramseal_new 1\n"
	if mask(t, extra) == mask(t, run1) {
		t.Error("a new series was lost")
	}
	gone := strings.Replace(run1, "vramseal_sealed_bytes{gpu=\"1\"} 5000\n", "", 1)
	if mask(t, gone) == mask(t, run1) {
		t.Error("a removed series went unnoticed")
	}
}

func TestMaskDrop(t *testing.T) {
	r := metricstest.DefaultRules
	r.Drop = func(f string) bool { return strings.HasPrefix(f, "go_") }
	b, err := metricstest.Mask(strings.NewReader(run1), r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "go_goroutines") {
		t.Error("dropped family still there")
	}
}

func TestMaskRejectsGarbage(t *testing.T) {
	if _, err := metricstest.Mask(strings.NewReader("this is { not metrics\n"), metricstest.DefaultRules); err == nil {
		t.Error("garbage accepted")
	}
}

// TestMaskedOutputPassesPromtool checks that a golden file made by Mask is
// still valid for `promtool check metrics`.
func TestMaskedOutputPassesPromtool(t *testing.T) {
	promtool := testenv.Tool(t, "VRAMSEAL_PROMTOOL")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(mask(t, run1))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics on masked output: %v\n%s", err, out)
	}
}

// FuzzMask checks that Mask never panics and that its output is a fixed
// point: masking a masked scrape changes nothing.
func FuzzMask(f *testing.F) {
	f.Add(run1)
	f.Add(run2)
	f.Add("# TYPE x counter\nx_total{a=\"b c\"} 1 1700000000000\n")
	f.Add("# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n")
	f.Fuzz(func(t *testing.T, in string) {
		once, err := metricstest.Mask(strings.NewReader(in), metricstest.DefaultRules)
		if err != nil {
			return
		}
		twice, err := metricstest.Mask(strings.NewReader(string(once)), metricstest.DefaultRules)
		if err != nil {
			t.Fatalf("masked output does not parse: %v\n%s", err, once)
		}
		if string(once) != string(twice) {
			t.Fatalf("not a fixed point:\n%s\n----\n%s", once, twice)
		}
	})
}
