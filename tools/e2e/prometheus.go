package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Prometheus is a running Prometheus server started for a test.
type Prometheus struct {
	URL      string
	Interval time.Duration // scrape and evaluation interval
	client   *http.Client
	proc     process
}

// PrometheusConfig says what a test Prometheus scrapes.
type PrometheusConfig struct {
	Binary    string        // the prometheus executable
	Job       string        // scrape job name (the rules select job="vramseal")
	Targets   []string      // host:port of each target
	RuleFiles []string      // absolute paths
	Interval  time.Duration // scrape and evaluation interval
}

// StartPrometheus starts Prometheus on a free loopback port with a temporary
// data directory and stops it when the test ends.
func StartPrometheus(ctx context.Context, t testing.TB, cfg PrometheusConfig) *Prometheus {
	t.Helper()
	dir := t.TempDir()
	var targets []string
	for _, tg := range cfg.Targets {
		targets = append(targets, strconv.Quote(tg))
	}
	var rules []string
	for _, r := range cfg.RuleFiles {
		rules = append(rules, "  - "+strconv.Quote(r))
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
rule_files:
%[2]s
scrape_configs:
  - job_name: %[3]s
    static_configs:
      - targets: [%[4]s]
`, cfg.Interval, strings.Join(rules, "\n"), strconv.Quote(cfg.Job), strings.Join(targets, ", "))
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeLoopbackAddr(t)
	cmd := exec.Command(cfg.Binary,
		"--config.file="+confPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	p := &Prometheus{URL: "http://" + addr, Interval: cfg.Interval, client: &http.Client{Timeout: 10 * time.Second},
		proc: process{name: "prometheus", logPath: filepath.Join(dir, "prometheus.log"), logTail: 4000, logTitle: "prometheus"}}
	p.proc.start(t, cmd, stopPolicy{grace: 10 * time.Second})
	p.proc.waitReady(ctx, t, p.client, p.URL+"/-/ready")
	return p
}

// Log returns the end of Prometheus's log, for failure messages.
func (p *Prometheus) Log() string { return p.proc.Log() }

func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// apiResponse is Prometheus's HTTP API envelope.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

func (p *Prometheus) get(ctx context.Context, path string, q url.Values, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path+"?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", path, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", path, err)
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("prometheus %s: status %s: %w: %s", path, resp.Status, err, bytes.TrimSpace(body))
	}
	if r.Status != "success" {
		return fmt.Errorf("prometheus %s %s: %s: %s", path, q.Get("query"), r.ErrorType, r.Error)
	}
	if err := json.Unmarshal(r.Data, into); err != nil {
		return fmt.Errorf("prometheus %s: data: %w", path, err)
	}
	return nil
}

// Series is one series of a query result (instant or range).
type Series struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`  // [unix seconds, "value"] for vectors
	Values [][]any           `json:"values"` // for matrices
}

// Float is the series' instant value.
func (s Series) Float() float64 {
	if len(s.Value) != 2 {
		return 0
	}
	str, _ := s.Value[1].(string)
	f, _ := strconv.ParseFloat(str, 64)
	return f
}

type queryData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

func decodeResult(d queryData) ([]Series, error) {
	switch d.ResultType {
	case "vector", "matrix":
		var s []Series
		if err := json.Unmarshal(d.Result, &s); err != nil {
			return nil, fmt.Errorf("decode %s: %w", d.ResultType, err)
		}
		return s, nil
	case "scalar":
		var v []any
		if err := json.Unmarshal(d.Result, &v); err != nil {
			return nil, fmt.Errorf("decode scalar: %w", err)
		}
		return []Series{{Value: v}}, nil
	}
	return nil, fmt.Errorf("unexpected result type %q", d.ResultType)
}

// Query runs an instant query now.
func (p *Prometheus) Query(ctx context.Context, expr string) ([]Series, error) {
	var d queryData
	if err := p.get(ctx, "/api/v1/query", url.Values{"query": {expr}}, &d); err != nil {
		return nil, err
	}
	return decodeResult(d)
}

// QueryRange runs a range query over the last span with one step per interval.
func (p *Prometheus) QueryRange(ctx context.Context, expr string, span time.Duration) ([]Series, error) {
	end := time.Now()
	q := url.Values{
		"query": {expr},
		"start": {strconv.FormatFloat(float64(end.Add(-span).UnixMilli())/1000, 'f', 3, 64)},
		"end":   {strconv.FormatFloat(float64(end.UnixMilli())/1000, 'f', 3, 64)},
		"step":  {strconv.FormatFloat(p.Interval.Seconds(), 'f', 3, 64)},
	}
	var d queryData
	if err := p.get(ctx, "/api/v1/query_range", q, &d); err != nil {
		return nil, err
	}
	return decodeResult(d)
}

// LabelValues returns the values of label on series matching match, as
// Grafana's label_values(match, label) does.
func (p *Prometheus) LabelValues(ctx context.Context, label, match string) ([]string, error) {
	q := url.Values{"match[]": {match}, "start": {strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)}}
	var vals []string
	if err := p.get(ctx, "/api/v1/label/"+url.PathEscape(label)+"/values", q, &vals); err != nil {
		return nil, err
	}
	return vals, nil
}

// Alert is one entry of /api/v1/alerts.
type Alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	ActiveAt    time.Time         `json:"activeAt"`
}

// Alerts returns the active (pending or firing) alerts.
func (p *Prometheus) Alerts(ctx context.Context) ([]Alert, error) {
	var d struct {
		Alerts []Alert `json:"alerts"`
	}
	if err := p.get(ctx, "/api/v1/alerts", nil, &d); err != nil {
		return nil, err
	}
	return d.Alerts, nil
}

// FiringAlert returns the firing alert named name whose labels include
// match, or false.
func (p *Prometheus) FiringAlert(ctx context.Context, name string, match map[string]string) (Alert, bool, error) {
	alerts, err := p.Alerts(ctx)
	if err != nil {
		return Alert{}, false, err
	}
next:
	for _, a := range alerts {
		if a.State != "firing" || a.Labels["alertname"] != name {
			continue
		}
		for k, v := range match {
			if a.Labels[k] != v {
				continue next
			}
		}
		return a, true, nil
	}
	return Alert{}, false, nil
}

// WaitFor polls cond every 50ms until it is true, returns an error, or the
// timeout passes; it returns when cond became true.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond()
		if ok {
			return time.Now(), nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s: not true after %s: %w", what, timeout, errors.Join(ctx.Err(), last))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
