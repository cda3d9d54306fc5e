package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// auditLine finds the agent's log line of an audit event with every one of
// the fields given ("key=value" as logfmt writes it).
func auditLine(log, event string, fields ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg="audit event"`) || !strings.Contains(line, "event="+event+" ") {
			continue
		}
		ok := true
		for _, f := range fields {
			if !regexp.MustCompile(`(^| )` + regexp.QuoteMeta(f) + `( |$)`).MatchString(line) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// TestEventsNameTheirCause: events say what caused them: the declared
// loader, the schedule, a control API caller (with its uid, pid and
// executable), a debug switch, a reload, the shutdown; and the GPU's UUID.
func TestEventsNameTheirCause(t *testing.T) {
	e := newEnv(t)
	e.shardFile("a.bin", 1<<20, 1)
	bPath := e.shardFile("b.bin", 1<<20, 2)
	e.writeConfig("sim", "a:a.bin:0")
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	e.mustCLI(0, "seal", bPath, "--id", "b", "--gpu", "1")
	e.mustCLI(0, "debug", "corrupt", "b", "--offset", "10")
	e.waitFor("a scheduled verification", func() bool {
		return auditLine(e.log.String(), "vramseal.seal.verified", "cause=schedule", "shard_id=a")
	})
	e.writeConfig("sim") // a leaves the configuration
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.waitFor("a released by the reload", func() bool {
		return auditLine(e.log.String(), "vramseal.vram.deallocated", "cause=reload", "shard_id=a")
	})
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.wait(30e9); code != 0 {
		t.Fatalf("exit %d", code)
	}
	log := e.log.String()
	me := fmt.Sprintf("caller_uid=%d", os.Getuid())
	for _, c := range []struct {
		event  string
		fields []string
	}{
		{"vramseal.vram.sealed", []string{"cause=declared", "shard_id=a", "gpu_uuid=GPU-SIM-00000000-0000-4000-8000-000000000000"}},
		{"vramseal.vram.sealed", []string{"cause=api", "shard_id=b", me, "caller_executable=" + e.bin, "gpu_uuid=GPU-SIM-00000001-0000-4000-8000-000000000001"}},
		{"vramseal.debug.fault_injected", []string{"cause=debug", "fault=corrupt", "shard_id=b", me, "gpu_uuid=GPU-SIM-00000001-0000-4000-8000-000000000001"}},
		{"vramseal.seal.verified", []string{"cause=schedule", "shard_id=a"}},
		{"vramseal.vram.deallocated", []string{"cause=reload", "shard_id=a", "reason=released"}},
		{"vramseal.vram.deallocated", []string{"cause=shutdown", "shard_id=b", "reason=shutdown"}},
		{"vramseal.vram.allocated", []string{"cause=api", "shard_id=b", "available_bytes=4293918720"}},
	} {
		if !auditLine(log, c.event, c.fields...) {
			t.Errorf("no %s event with %v", c.event, c.fields)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, `msg="audit event"`) {
				t.Log(l)
			}
		}
	}
}
