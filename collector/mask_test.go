package collector_test

import (
	"os"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/collector/metricstest"
)

// TestMaskedScrapesOfTwoRunsAreEqual builds the same agent state twice and
// checks that the masked scrapes are equal and keep every series: what the
// golden end-to-end test of the agent relies on.
func TestMaskedScrapesOfTwoRunsAreEqual(t *testing.T) {
	s1, s2 := scrape(t, fullEnv(t).reg), scrape(t, fullEnv(t).reg)
	m1, err := metricstest.Mask(strings.NewReader(s1), metricstest.DefaultRules)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := metricstest.Mask(strings.NewReader(s2), metricstest.DefaultRules)
	if err != nil {
		t.Fatal(err)
	}
	if string(m1) != string(m2) {
		t.Fatalf("masked scrapes differ:\n%s\n----\n%s", m1, m2)
	}
	if metricstest.Samples(string(m1)) != metricstest.Samples(s1) {
		t.Errorf("masking changed the number of series: %d -> %d", metricstest.Samples(s1), metricstest.Samples(string(m1)))
	}
}

// TestScrapeIsDocumented checks a full scrape against docs/metrics.md.
func TestScrapeIsDocumented(t *testing.T) {
	doc, err := os.Open("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defer doc.Close()
	if err := metricstest.CheckDocumented(strings.NewReader(scrape(t, fullEnv(t).reg)), doc, "vramseal_"); err != nil {
		t.Fatal(err)
	}
}
