package otel

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/internal/killtest"
	"github.com/vramseal/vramseal/audit/spool"
)

const pipelineChildEnv = "VRAMSEAL_PIPELINE_KILL_CHILD"

// TestPipelineKillChild is the child of TestSIGKILLThenShip: an agent-like
// process emitting a burst through the Pipeline (the collector it points at
// is down) and printing "durable <id>" for each CRITICAL event whose
// operation learned that its record was durable.
func TestPipelineKillChild(t *testing.T) {
	dir, ok := killtest.ChildDir(pipelineChildEnv)
	if !ok {
		return // only as the child of TestSIGKILLThenShip
	}
	log, _ := testLogger()
	p, err := NewPipeline(context.Background(), Config{Spool: spool.Config{Dir: dir, CheckpointKey: make([]byte, 32)}, WorkerID: "node-a", Logger: log})
	if err != nil {
		fmt.Println("pipeline:", err)
		os.Exit(3)
	}
	var rep killtest.Reporter
	rep.Ready()
	for i := 0; ; i++ {
		if i%4 == 0 {
			ev := audit.SealVerificationFailed{Header: audit.NewHeader(time.Now(), "node-a"), ShardID: fmt.Sprintf("s-%d", i), Reason: audit.ReasonDigestMismatch}
			rep.Durable(p.Emit(context.Background(), ev), ev.ID)
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
	killtest.SkipInChild(t, pipelineChildEnv)
	c := newCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.endpoint(ProtocolGRPC))
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", ProtocolGRPC)
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	dir := t.TempDir()
	durable := map[string]bool{}
	child := killtest.Child{Test: "TestPipelineKillChild", Env: pipelineChildEnv, Dir: dir, MaxDelay: 100 * time.Millisecond}
	for round := 0; round < 20; round++ {
		for _, id := range child.KillRound(t, round) {
			durable[id] = true
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
	p := newTestPipeline(t, Config{Spool: spool.Config{Dir: dir}})
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
