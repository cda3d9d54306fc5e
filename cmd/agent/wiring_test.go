package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/sealer/cuda"
)

func TestOpenDevicesNeverSimulatesSilently(t *testing.T) {
	noDriver := func(context.Context, cuda.Options) ([]*cuda.Device, error) {
		return nil, fmt.Errorf("cuda: %w: libcuda.so.1: cannot open shared object file", cuda.ErrNoDriver)
	}
	for _, dev := range []string{config.DeviceCUDA, config.DeviceAuto} {
		g, err := openDevices(context.Background(), &config.Config{Device: dev}, noDriver)
		if !errors.Is(err, errNoDriver) || g != nil {
			t.Errorf("device %s: %v, %v", dev, err, g)
			continue
		}
		if !strings.Contains(err.Error(), "does not fall back") {
			t.Errorf("device %s: message does not say there is no fallback: %v", dev, err)
		}
		// The real driver loader: on this machine either GPUs or ErrNoDriver
		// (or ErrNoDevice), never simulated devices.
		g, err = openDevices(context.Background(), &config.Config{Device: dev}, cuda.Open)
		if err == nil {
			if g.sims != nil || len(g.cudaDevs) == 0 {
				t.Errorf("device %s opened %d simulated and %d CUDA devices", dev, len(g.sims), len(g.cudaDevs))
			}
			_ = g.close()
		} else if !errors.Is(err, cuda.ErrNoDriver) && !errors.Is(err, cuda.ErrNoDevice) {
			t.Errorf("device %s: %v", dev, err)
		}
	}
	// cuda.library reaches the driver loader.
	var opened cuda.Options
	record := func(_ context.Context, o cuda.Options) ([]*cuda.Device, error) {
		opened = o
		return noDriver(context.Background(), o)
	}
	_, _ = openDevices(context.Background(), &config.Config{Device: config.DeviceCUDA, CUDA: config.CUDA{Library: "/drv/libcuda.so.1"}}, record)
	if opened.LibraryPath != "/drv/libcuda.so.1" {
		t.Errorf("cuda.library reached cuda.Open as %q", opened.LibraryPath)
	}
	cfg := config.Default()
	cfg.Device, cfg.Sim.GPUs = config.DeviceSim, 3
	g, err := openDevices(context.Background(), &cfg, noDriver)
	if err != nil || len(g.devs) != 3 || len(g.sims) != 3 || len(g.policy) != 3 {
		t.Fatalf("sim: %v, %+v", err, g)
	}
}

func TestClientExitCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("x: %w", client.ErrUnreachable), exitUnreachable},
		{&client.APIError{Status: 400}, exitUsage},
		{&client.APIError{Status: 404}, exitUsage},
		{&client.APIError{Status: 413}, exitUsage},
		{&client.APIError{Status: 403}, exitFailed},
		{&client.APIError{Status: 409}, exitFailed},
		{&client.APIError{Status: 422}, exitFailed},
		{&client.APIError{Status: 507}, exitFailed},
		{errors.New("other"), exitFailed},
	} {
		var out bytes.Buffer
		if got := clientExit(cli{stdout: &out, stderr: &out}, "x", tc.err); got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestLoggerFormatsAndSlogAdapter(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	s := newSlog(log).With("address", ":9477").WithGroup("tls")
	s.Debug("hidden")
	s.Info("Listening on", "enabled", false)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %v\n%s", err, buf.String())
	}
	if line["msg"] != "Listening on" || line["address"] != ":9477" || line["tls.enabled"] != false || line["level"] != "info" {
		t.Errorf("line %v", line)
	}
	buf.Reset()
	log, _ = newLogger(&buf, "debug", "logfmt")
	log.WithField("shard_id", "a b").Debug("x")
	if !strings.Contains(buf.String(), `level=debug msg=x shard_id="a b"`) {
		t.Errorf("logfmt line: %s", buf.String())
	}
	if _, err := newLogger(&buf, "info", "xml"); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestWebEndpoints(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	if err := os.WriteFile(key, bytes.Repeat([]byte{1}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(filepath.Join(dir, "a.yml"), fmt.Appendf(nil, "device: sim\nseal_secret_file: %s\naudit: {spool_dir: %s}\nshards: [{id: a, path: /nonexistent/a}]\n", key, filepath.Join(dir, "spool")), config.Env{})
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(&bytes.Buffer{})
	a, err := newAgent(context.Background(), cfg, log, cuda.Open)
	if err != nil {
		t.Fatal(err)
	}
	a.declared.Set(cfg.DeclaredShards())
	h, err := newWebHandler(a, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, httptest.NewRequest(http.MethodGet, path, nil))
		return rw.Code, rw.Body.String()
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "declared shards not sealed yet: a") {
		t.Errorf("/readyz with a declared shard pending: %d %s", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "process_") || !strings.Contains(body, "go_goroutines") ||
		!strings.Contains(body, `vramseal_agent_info{device="sim"`) {
		t.Errorf("/metrics: %d", code)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "SIMULATED") {
		t.Errorf("status page: %d", code)
	} else {
		for _, want := range []string{`<section id="gpus">`, `<section id="shards">`, `<section id="audit">`, `<section id="events">`,
			"declared shards not sealed yet: a", `<a href="/metrics">`, `<a href="/healthz">`, `<a href="/readyz">`} {
			if !strings.Contains(body, want) {
				t.Errorf("status page lacks %q", want)
			}
		}
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
	a.declared.Set(nil)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz with nothing declared: %d", code)
	}
}
