package otel

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
)

const pipelineChildEnv = "VRAMSEAL_PIPELINE_KILL_CHILD"

// TestPipelineKillChild is the child of TestSIGKILLThenShip: an agent-like
// process emitting a burst through the Pipeline (the collector it points at
// is down) and printing "durable <id>" for each CRITICAL event whose
// operation learned that its record was durable.
func TestPipelineKillChild(t *testing.T) {
	dir := os.Getenv(pipelineChildEnv)
	if dir == "" {
		t.Skip("child process of TestSIGKILLThenShip")
	}
	log, _ := testLogger()
	p, err := NewPipeline(context.Background(), Config{SpoolDir: dir, WorkerID: "node-a", Logger: log, CheckpointKey: make([]byte, 32)})
	if err != nil {
		fmt.Println("pipeline:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	fmt.Println("ready")
	for i := 0; ; i++ {
		if i%4 == 0 {
			ev := audit.SealVerificationFailed{Header: audit.NewHeader(time.Now(), "node-a"), ShardID: fmt.Sprintf("s-%d", i), Reason: audit.ReasonDigestMismatch}
			r := p.Emit(context.Background(), ev)
			go func() {
				if audit.WaitDurable(context.Background(), r, 2*time.Second) == nil {
					mu.Lock()
					fmt.Println("durable", ev.ID)
					mu.Unlock()
				}
			}()
		} else {
			p.Emit(context.Background(), audit.SealVerified{Header: audit.NewHeader(time.Now(), "node-a"), ShardID: fmt.Sprintf("s-%d", i)})
		}
		if i%32 == 0 {
			time.Sleep(200 * time.Microsecond)
		}
	}
}

// TestSIGKILLThenShip kills an emitting process 20 times at random moments
// while the collector is down, then starts the collector and a pipeline on
// the same spool: every CRITICAL record the process was told was durable
// reaches the collector, and the chain verifies.
func TestSIGKILLThenShip(t *testing.T) {
	if os.Getenv(pipelineChildEnv) != "" {
		t.Skip("in the child")
	}
	c := newCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.endpoint(ProtocolGRPC))
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", ProtocolGRPC)
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	dir := t.TempDir()
	durable := map[string]bool{}
	for round := 0; round < 20; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPipelineKillChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), pipelineChildEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1<<16)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		if first := <-lines; first != "ready" {
			t.Fatalf("round %d: child said %q", round, first)
		}
		time.Sleep(time.Duration(5+rand.IntN(100)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		for l := range lines {
			if id, ok := strings.CutPrefix(l, "durable "); ok {
				durable[id] = true
			}
		}
	}
	if len(durable) < 20 {
		t.Fatalf("only %d CRITICAL records confirmed in 20 rounds", len(durable))
	}
	rep, err := spool.Verify(dir, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		if !strings.Contains(p.Reason, "torn") {
			t.Fatalf("after the kills: %v", p)
		}
	}
	c.start(t)
	p := newTestPipeline(t, Config{SpoolDir: dir})
	c.waitFor(t, durable, 40*time.Second)
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep, err = spool.Verify(dir, make([]byte, 32))
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %v %v", err, rep.Problems)
	}
	t.Logf("%d confirmed CRITICAL records reached the collector; %d records in the spool", len(durable), rep.Records)
}
