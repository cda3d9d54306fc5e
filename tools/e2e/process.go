package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"
)

// process is a server a test started, its stdout and stderr in a log file.
type process struct {
	name     string // for messages
	logPath  string
	logTail  int    // how many bytes of the log end Log returns
	logTitle string // Log's first line
	exited   chan struct{}
	waitErr  error // set when exited is closed
}

// stopPolicy says how a process is stopped when its test ends: SIGINT, then
// SIGKILL after grace. A strict stop logs a failed exit and fails the test
// when grace runs out.
type stopPolicy struct {
	grace  time.Duration
	strict bool
}

// start starts cmd with its output in p.logPath and stops it as stop says
// when the test ends.
func (p *process) start(t testing.TB, cmd *exec.Cmd, stop stopPolicy) {
	t.Helper()
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s %s: %v", p.name, cmd.Path, err)
	}
	p.exited = make(chan struct{})
	go func() { p.waitErr = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
			if stop.strict && p.waitErr != nil {
				t.Logf("%s exit: %v", p.name, p.waitErr)
			}
		case <-time.After(stop.grace):
			_ = cmd.Process.Kill()
			<-p.exited
			if stop.strict {
				t.Errorf("%s did not stop within %s of SIGINT\n%s", p.name, stop.grace, p.Log())
			}
		}
		logFile.Close()
	})
}

// waitReady polls url until it answers 200 OK, and fails the test when the
// process exits first or 60 seconds pass.
func (p *process) waitReady(ctx context.Context, t testing.TB, client *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.exited:
			t.Fatalf("%s exited at start-up: %v\n%s", p.name, p.waitErr, p.Log())
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready (GET %s) after 60s\n%s", p.name, url, p.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Log returns the end of the process's log, for failure messages.
func (p *process) Log() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > p.logTail {
		b = b[len(b)-p.logTail:]
	}
	return "--- " + p.logTitle + " log (end) ---\n" + string(b)
}
