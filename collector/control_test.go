package collector_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vramseal/vramseal/collector"
)

func TestControlRateLimited(t *testing.T) {
	counters := &collector.ControlCounters{}
	e := newEnv(t, envOpts{mutate: func(o *collector.Options) { o.Control = counters }})
	counters.RateLimited()
	counters.RateLimited()
	want := `
# HELP vramseal_control_rate_limited_total Control API calls refused with 429 because their caller (uid) went over control.rate_limit.
# TYPE vramseal_control_rate_limited_total counter
vramseal_control_rate_limited_total 2
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "vramseal_control_rate_limited_total"); err != nil {
		t.Fatal(err)
	}
}
