package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// soakCollector is the pinned OpenTelemetry Collector on one port, stopped
// and started again and again; each run writes its own file.
type soakCollector struct {
	t     *testing.T
	bin   string
	dir   string
	port  int
	mu    sync.Mutex
	cmd   *exec.Cmd
	files []string
	out   bytes.Buffer
}

func newSoakCollector(t *testing.T, bin string) *soakCollector {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c := &soakCollector{t: t, bin: bin, dir: t.TempDir(), port: port}
	t.Cleanup(c.stop)
	return c
}

func (c *soakCollector) endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", c.port) }

// start runs the collector (when it is not running) writing a new file,
// and waits until it listens.
func (c *soakCollector) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return
	}
	n := len(c.files)
	file := filepath.Join(c.dir, fmt.Sprintf("logs-%04d.jsonl", n))
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  file: {path: %q, flush_interval: 100ms}
service:
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
  pipelines:
    logs: {receivers: [otlp], exporters: [file]}
`, c.port, file)
	cfgFile := filepath.Join(c.dir, fmt.Sprintf("config-%04d.yaml", n))
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		c.t.Error(err)
		return
	}
	cmd := exec.Command(c.bin, "--config=file:"+cfgFile)
	cmd.Stdout, cmd.Stderr = &c.out, &c.out
	if err := cmd.Start(); err != nil {
		c.t.Error(err)
		return
	}
	c.cmd = cmd
	c.files = append(c.files, file)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.port), 200*time.Millisecond); err == nil {
			conn.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Errorf("the collector did not listen: %s", c.out.String())
}

// stop ends the collector with SIGTERM (it flushes its file), or SIGKILL
// after 10s.
func (c *soakCollector) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	c.cmd = nil
	// A run that received nothing leaves no file.
	if _, err := os.Stat(c.files[len(c.files)-1]); err != nil {
		c.files = c.files[:len(c.files)-1]
	}
}

type soakResult struct {
	d, warm    time.Duration
	rows       []sampleRow
	stats      *loadStats
	faults     map[string]int
	verify     string
	verifyCode int
	files      int
	// verifications by result, from vramseal_verifications_total
	verifications map[string]float64
}

// soakNumbers are what audit verify says about the two copies.
func soakNumbers(out string) (spoolRecs, copyRecs, dups int) {
	if m := regexp.MustCompile(`(?m)^records\s+(\d+)`).FindStringSubmatch(out); m != nil {
		spoolRecs, _ = strconv.Atoi(m[1])
	}
	if m := regexp.MustCompile(`(?m)^collector\s+(\d+) log records`).FindStringSubmatch(out); m != nil {
		copyRecs, _ = strconv.Atoi(m[1])
	}
	return spoolRecs, copyRecs, strings.Count(out, "\nduplicate  ")
}

// soakReport writes the soak's table, logs it, and fails the test when a
// call failed or the growth passed a bound.
func soakReport(t *testing.T, r soakResult) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "soak: %s, agent on %d simulated GPUs with %d shards of %d KiB verified every second; %d cores\n",
		r.d.Round(time.Second), soakGPUs, soakShards, soakShardLen>>10, runtime.NumCPU())
	errs := r.stats.table(&b)
	names := make([]string, 0, len(r.faults))
	for n := range r.faults {
		names = append(names, n)
	}
	slices.Sort(names)
	fmt.Fprintln(&b, "faults injected:")
	for _, n := range names {
		fmt.Fprintf(&b, "  %6d  %s\n", r.faults[n], n)
	}
	results := make([]string, 0, len(r.verifications))
	for k := range r.verifications {
		results = append(results, k)
	}
	slices.Sort(results)
	fmt.Fprint(&b, "verifications:")
	for _, k := range results {
		fmt.Fprintf(&b, " %s %.0f", k, r.verifications[k])
	}
	fmt.Fprintln(&b)
	spoolRecs, copyRecs, dups := soakNumbers(r.verify)
	lost := strings.Count(r.verify, "missing from the collector's copy")
	shipped := 0
	if m := regexp.MustCompile(`(?m)^anchor\s+shipped (\d+)`).FindStringSubmatch(r.verify); m != nil {
		shipped, _ = strconv.Atoi(m[1])
	}
	fmt.Fprintf(&b, "audit: %d records in the spool (seq 1..%d shipped; the rest, written at shutdown, ship at the next start), %d log records in %d collector files, %d duplicates (de-duplicated by log.record.uid), %d lost; audit verify exit %d\n",
		spoolRecs, shipped, copyRecs, r.files, dups, lost, r.verifyCode)

	end := r.rows[len(r.rows)-1].at
	w0 := window(r.rows, r.warm-5*time.Second, r.warm+5*time.Second)
	w1 := window(r.rows, end-10*time.Second, end+time.Second)
	peak := [3]int{}
	for _, s := range r.rows {
		peak = [3]int{max(peak[0], s.rss), max(peak[1], s.fds), max(peak[2], s.goroutines)}
	}
	fmt.Fprintf(&b, "growth from %s to the end (%s; medians of 10 one-second samples):\n", r.warm.Round(time.Second), end.Round(time.Second))
	fmt.Fprintf(&b, "%-12s %12s %12s %12s %12s %12s\n", "", "at warm-up", "at the end", "peak", "growth", "bound")
	bounds := [3]int{soakRSSBound, soakFDBound, soakGoroutinesBound}
	label := [3]string{"RSS (KiB)", "fds", "goroutines"}
	scale := [3]int{1024, 1, 1}
	over := false
	for i := range 3 {
		growth := w1[i] - w0[i]
		fmt.Fprintf(&b, "%-12s %12d %12d %12d %12d %12d\n", label[i], w0[i]/scale[i], w1[i]/scale[i], peak[i]/scale[i], growth/scale[i], bounds[i]/scale[i])
		over = over || growth > bounds[i]
	}
	t.Logf("\n%s", b.String())
	report := filepath.Join(os.TempDir(), "vramseal-soak.txt")
	if err := os.WriteFile(report, b.Bytes(), 0o644); err == nil {
		t.Logf("table written to %s", report)
	}
	if over {
		t.Error("growth over its bound (table above)")
	}
	if errs != 0 {
		for n, o := range r.stats.ops {
			if o.errors > 0 {
				t.Errorf("%s: %d errors, the first: %s", n, o.errors, o.first)
			}
		}
	}
	if lost != 0 {
		t.Errorf("%d records of the spool are missing from the collector's files", lost)
	}
}
