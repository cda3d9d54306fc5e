package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
)

// showSpool writes a spool of known records: three shards, three event
// kinds, one CRITICAL, an hour apart from 08:00.
func showSpool(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	log, _ := test.NewNullLogger()
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	s, err := spool.Open(spool.Config{Dir: dir, Logger: log, WorkerID: "node-a", Now: func() time.Time { return t0.Add(5 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	evs := []audit.Event{
		audit.VRAMAllocated{Header: audit.NewHeader(t0, "node-a"), ShardID: "a", RequestedBytes: 1},
		audit.VRAMSealed{Header: audit.NewHeader(t0.Add(time.Hour), "node-a"), ShardID: "a", Digest: "d"},
		audit.SealVerified{Header: audit.NewHeader(t0.Add(2*time.Hour), "node-a"), ShardID: "b", Digest: "d"},
		audit.SealVerificationFailed{Header: audit.NewHeader(t0.Add(3*time.Hour), "node-a"), ShardID: "b", Reason: audit.ReasonDigestMismatch},
		audit.SealVerified{Header: audit.NewHeader(t0.Add(4*time.Hour), "node-a"), ShardID: "c with space", Digest: "d"},
	}
	for _, ev := range evs {
		if err := audit.WaitDurable(context.Background(), s.Append(spool.EntryOf(ev), true), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestAuditShowFilters(t *testing.T) {
	dir := showSpool(t)
	for _, tc := range []struct {
		name string
		args []string
		want []string // the events of the lines, in order
	}{
		{"all", nil, []string{"vram.allocated", "vram.sealed", "seal.verified", "seal.verification_failed", "seal.verified", "audit.checkpoint"}},
		{"event", []string{"--event", "seal.verified"}, []string{"seal.verified", "seal.verified"}},
		{"event with prefix", []string{"--event", "vramseal.vram.sealed"}, []string{"vram.sealed"}},
		{"shard", []string{"--shard", "b"}, []string{"seal.verified", "seal.verification_failed"}},
		{"since", []string{"--since", "2026-12-01T10:00:00Z"}, []string{"seal.verified", "seal.verification_failed", "seal.verified", "audit.checkpoint"}},
		{"until", []string{"--until", "2026-12-01T09:00:00Z"}, []string{"vram.allocated"}},
		{"since and until", []string{"--since", "2026-12-01T09:00:00Z", "--until", "2026-12-01T11:00:00Z"}, []string{"vram.sealed", "seal.verified"}},
		{"severity", []string{"--severity", "critical"}, []string{"seal.verification_failed"}},
		{"severity and shard", []string{"--severity", "INFO", "--shard", "a", "--event", "vram.allocated"}, []string{"vram.allocated"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLIForTest(t, append([]string{"audit", "show", "--spool.dir", dir}, tc.args...)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errs)
			}
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if line == "" {
					continue
				}
				_, ev, _ := strings.Cut(line, " event=vramseal.")
				ev, _, _ = strings.Cut(ev, " ")
				got = append(got, ev)
				if !strings.HasPrefix(line, "seq=") || !strings.Contains(line, " prev_hash=") || !strings.Contains(line, " hash=") {
					t.Errorf("line without seq or hashes: %s", line)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("events %v, want %v\n%s", got, tc.want, out)
			}
		})
	}
	if _, out, _ := runCLIForTest(t, "audit", "show", "--spool.dir", dir, "--shard", "c with space"); !strings.Contains(out, `shard_id="c with space"`) {
		t.Errorf("a value with a space is not quoted: %s", out)
	}
	for _, bad := range [][]string{{"--since", "yesterday"}, {"--severity", "LOUD"}, {"-o", "yaml"}, {"--spool.dir", dir + "/none"}} {
		if code, _, _ := runCLIForTest(t, append([]string{"audit", "show", "--spool.dir", dir}, bad...)...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", bad, code, exitUsage)
		}
	}
}

// audit show -o json writes each record as it is shipped: event.name,
// severity, log.record.uid, seq, hashes, and the attributes under their
// OTel keys.
func TestAuditShowJSON(t *testing.T) {
	dir := showSpool(t)
	code, out, errs := runCLIForTest(t, "audit", "show", "--spool.dir", dir, "--event", "seal.verification_failed", "-o", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	attrs, _ := r["attributes"].(map[string]any)
	if r["event.name"] != "vramseal.seal.verification_failed" || r["severity_text"] != "CRITICAL" || r["severity_number"] != float64(21) ||
		r["vramseal.audit.seq"] != float64(4) || len(r["vramseal.audit.hash"].(string)) != 64 || r["log.record.uid"] == "" ||
		attrs["vramseal.shard.id"] != "b" || attrs["vramseal.verification.reason"] != "digest_mismatch" || attrs["vramseal.audit.body"] == nil {
		t.Fatalf("record: %s", out)
	}
}
