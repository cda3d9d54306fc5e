// Command render writes vramseal's Grafana dashboards as JSON files
// (`make generate` runs it with -out dashboards/json).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vramseal/vramseal/dashboards"
)

func main() {
	out := flag.String("out", "dashboards/json", "directory to write the dashboard JSON files to")
	flag.Parse()
	if err := render(*out); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}

func render(dir string) error {
	all, err := dashboards.All()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, d := range all {
		if err := os.WriteFile(filepath.Join(dir, d.File), d.JSON, 0o644); err != nil {
			return fmt.Errorf("write dashboard: %w", err)
		}
	}
	return nil
}
