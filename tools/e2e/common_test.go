package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vramseal/vramseal/alerts"
	"github.com/vramseal/vramseal/dashboards"
	"github.com/vramseal/vramseal/internal/testenv"
)

// interval is the scrape and rule evaluation interval of the test
// Prometheus.
const interval = time.Second

func prometheusBinary(t *testing.T) string {
	t.Helper()
	p := testenv.Tool(t, "VRAMSEAL_PROMETHEUS")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("VRAMSEAL_PROMETHEUS=%s: %v", p, err)
	}
	return p
}

func rulesPath(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "alerts", alerts.RulesFile))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func models(t *testing.T) []dashboards.Model {
	t.Helper()
	m, err := dashboards.Models()
	if err != nil {
		t.Fatal(err)
	}
	return m
}
