package spool

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/internal/killtest"
)

const killChildEnv = "VRAMSEAL_SPOOL_KILL_CHILD"

// TestKillChild is the child process of TestSIGKILLDuringBurst: it emits a
// burst of events into the spool named by the environment, every fifth one
// CRITICAL, and prints "durable <id>" for each CRITICAL record the spool
// confirmed, as an operation would report it.
func TestKillChild(t *testing.T) {
	dir, ok := killtest.ChildDir(killChildEnv)
	if !ok {
		return // only as the child of TestSIGKILLDuringBurst
	}
	l, _ := quietLogger()
	s, err := Open(Config{Dir: dir, CheckpointKey: testKey, SegmentBytes: 16 << 10, Logger: l})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(3)
	}
	var rep killtest.Reporter
	rep.Ready()
	for i := 0; ; i++ {
		e := entry(i, audit.SeverityInfo)
		e.ID = fmt.Sprintf("%d-%d", os.Getpid(), i)
		if i%5 == 0 {
			e.Severity = audit.SeverityCritical
			rep.Durable(s.Append(e, true), e.ID)
		} else {
			s.Append(e, false)
		}
		if i%64 == 0 {
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// TestSIGKILLDuringBurst kills a process writing the spool at random moments,
// 20 times over the same folder: every CRITICAL record the process was told
// was durable is in the spool afterwards, and the chain verifies.
func TestSIGKILLDuringBurst(t *testing.T) {
	killtest.SkipInChild(t, killChildEnv)
	dir := t.TempDir()
	durable := map[string]bool{}
	child := killtest.Child{Test: "TestKillChild", Env: killChildEnv, Dir: dir, MaxDelay: 120 * time.Millisecond}
	for round := 0; round < 20; round++ {
		n := 0
		for _, id := range child.KillRound(t, round) {
			durable[id] = true
			n++
		}
		if round == 0 && n == 0 {
			t.Log("first round confirmed nothing before the kill")
		}
		// Start-up repairs whatever the kill left.
		rep, err := Verify(dir, testKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rep.Problems {
			if !strings.Contains(p.Reason, "torn") {
				t.Fatalf("round %d: a kill left more than a torn tail: %v", round, p)
			}
		}
		l, _ := quietLogger()
		s, err := Open(Config{Dir: dir, CheckpointKey: testKey, SegmentBytes: 16 << 10, Logger: l})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		closeT(t, s)
	}
	if len(durable) < 20 {
		t.Fatalf("only %d CRITICAL records were confirmed in 20 rounds; the test proves little", len(durable))
	}
	rep := verifyOK(t, dir)
	l, _ := quietLogger()
	s, err := Open(Config{Dir: dir, CheckpointKey: testKey, Logger: l})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, r := range readAll(t, s) {
		have[r.ID] = true
	}
	closeT(t, s)
	for id := range durable {
		if !have[id] {
			t.Fatalf("CRITICAL record %s was confirmed durable but is not in the spool", id)
		}
	}
	t.Logf("%d confirmed CRITICAL records all present; %d records, %d repairs, chain intact", len(durable), rep.Records, len(rep.Repairs))
}
