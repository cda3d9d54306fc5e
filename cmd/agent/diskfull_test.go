package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/testenv"
)

// The disk-full test's file system and thresholds.
const (
	diskFullFS      = 8 << 20 // the tmpfs holding the spool
	diskFullMinFree = 2 << 20 // audit.min_free_bytes
)

// mountTmpfs mounts a tmpfs of size bytes on a new folder and unmounts it
// at the end of the test.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	testenv.Root(t, "mounting a tmpfs for the spool")
	dir := filepath.Join(t.TempDir(), "spoolfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		testenv.Missing(t, "cannot mount a tmpfs (%v): the disk-full test needs CAP_SYS_ADMIN", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting the test's tmpfs: %v", err)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fill grows the filler file until the file system has left bytes free
// (0: until writes fail with ENOSPC).
func fill(t *testing.T, filler string, fsDir string, left int64) {
	t.Helper()
	f, err := os.OpenFile(filler, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for freeBytes(t, fsDir) > left {
		if _, err := f.Write(buf[:min(int64(len(buf)), max(freeBytes(t, fsDir)-left, 1))]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}

// sample reads one sample from /metrics whose labels contain labels (the
// unlabelled one when labels is ""); 0 when absent or unreachable. Unlike
// metric it may be called from any goroutine.
func (e *env) sample(name, labels string) float64 {
	_, body := e.get("/metrics")
	for _, line := range strings.Split(body, "\n") {
		if (labels == "" && strings.HasPrefix(line, name+" ")) || (labels != "" && strings.HasPrefix(line, name+"{") && strings.Contains(line, labels)) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			return v
		}
	}
	return 0
}

// TestDiskFull runs the agent with its spool on a real 8 MiB tmpfs, filled
// first below audit.min_free_bytes, then to the last byte: sealing,
// releasing and verifying go on; lost non-CRITICAL events are counted and
// recorded; a digest mismatch's CRITICAL record is durable in the reserve
// below the minimum; once space returns every event is written again, and
// the chain verifies across the episode.
func TestDiskFull(t *testing.T) {
	fsDir := mountTmpfs(t, diskFullFS)
	e := newEnv(t)
	spoolDir := filepath.Join(fsDir, "spool")
	var shards strings.Builder
	for i := range 8 {
		e.shardFile(fmt.Sprintf("s%d.bin", i), 64<<10, byte(i))
		fmt.Fprintf(&shards, "  - {id: s%d, path: models/s%d.bin, gpu: %d}\n", i, i, i%2)
	}
	sealFile := e.shardFile("x.bin", 64<<10, 50)
	cfg := fmt.Sprintf("worker_id: diskfull-node\ndevice: sim\nsim: {gpus: 2, memory_bytes: 1073741824}\nseal_secret_file: %s\nmodel_dirs: [%s]\n"+
		"audit: {spool_dir: %s, segment_bytes: 1048576, min_free_bytes: %d}\nverify: {interval: 1s, jitter: 0.1}\nshards:\n%s",
		filepath.Join(e.dir, "seal.key"), e.models, spoolDir, diskFullMinFree, shards.String())
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	e.start("--log.level", "info")
	ctx := context.Background()
	c := client.NewControl(e.socket, 30*time.Second)
	defer c.CloseIdleConnections()
	e.waitFor("readiness", func() bool { st, err := c.Status(ctx); return err == nil && st.Ready })

	ops := 0
	operate := func(phase string) {
		t.Helper()
		id := fmt.Sprintf("x%d", ops)
		ops++
		if _, err := c.Seal(ctx, client.SealRequest{ID: id, Path: sealFile, GPU: ops % 2}); err != nil {
			t.Fatalf("%s: seal: %v", phase, err)
		}
		if r, err := c.VerifyAll(ctx); err != nil || len(r.Results) != 9 {
			t.Fatalf("%s: verify --all: %+v %v", phase, r, err)
		}
		if _, err := c.Release(ctx, id, false); err != nil {
			t.Fatalf("%s: release: %v", phase, err)
		}
	}
	lost := func() float64 { return e.sample("vramseal_audit_events_lost_total", `reason="disk_full"`) }
	filler := filepath.Join(fsDir, "filler")

	// Below the minimum: operations go on, ordinary events are lost and
	// counted, a CRITICAL one is written.
	fill(t, filler, fsDir, diskFullMinFree/2)
	e.waitFor("events lost below the minimum", func() bool { operate("below the minimum"); return lost() > 0 })
	if _, err := c.Debug(ctx, "corrupt", client.CorruptRequest{ID: "s3", Offset: 777, Bit: 1}); err != nil {
		t.Fatal(err)
	}
	res, err := c.Verify(ctx, "s3")
	if err != nil || res.Intact || len(res.Results) != 1 || res.Results[0].Result != "digest_mismatch" {
		t.Fatalf("verify of the corrupted shard: %+v %v", res, err)
	}
	if !res.Results[0].AuditDurable {
		t.Errorf("the mismatch's CRITICAL record %s is not durable below the minimum free space", res.Results[0].EventID)
	}
	critical := res.Results[0].EventID
	if _, err := c.Release(ctx, "s3", true); err != nil {
		t.Fatal(err)
	}

	// Full to the last byte: operations still go on.
	fill(t, filler, fsDir, 0)
	before := lost()
	e.waitFor("events lost on a full disk", func() bool { operate("disk full"); return lost() > before })
	t.Logf("lost on a full disk, disk_full so far: %g", lost())

	// Space back: every event is written again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the spool's free-space check runs at least every second
	settled := lost()
	for range 5 {
		operate("space back")
	}
	if got := lost(); got != settled {
		t.Errorf("%g more events lost after space returned", got-settled)
	}
	total := lost()
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	if code, out, errOut := e.cli("audit", "verify", "--spool.dir", spoolDir, "--seal.secret-file", filepath.Join(e.dir, "seal.key")); code != 0 {
		t.Fatalf("audit verify across the episode: exit %d\n%s%s", code, out, errOut)
	}
	recs := spoolRecords(t, spoolDir)
	recorded := uint64(0)
	for _, r := range recs[spool.NameLoss] {
		var reason string
		var count uint64
		for _, f := range r.Fields {
			switch f.Key {
			case "reason":
				reason, _ = f.Value.(string)
			case "count":
				count, _ = f.Value.(uint64)
			}
		}
		if reason == audit.LossDiskFull {
			recorded += count
		}
	}
	if float64(recorded) != total || total == 0 {
		t.Errorf("loss records say %d events lost to a full disk, the metric %g", recorded, total)
	}
	found := false
	for _, r := range recs[audit.NameSealVerificationFailed] {
		found = found || r.ID == critical
	}
	if !found {
		t.Errorf("the CRITICAL record %s is not in the spool", critical)
	}
	if n := len(recs[audit.NameVRAMDeallocated]); n < ops {
		t.Logf("%d vram.deallocated records for %d releases (the rest lost and counted)", n, ops)
	}
	t.Logf("%d operations; %d events lost to the full disk, all recorded by loss records; the chain verifies", ops, recorded)
}
