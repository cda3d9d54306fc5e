package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// kubeletConfigMap lays out a ConfigMap volume as the kubelet does: each
// version in its own hidden directory, `..data` a symlink to the current
// one, and config.yml a symlink through `..data`.
type kubeletConfigMap struct {
	t       *testing.T
	dir     string
	version int
}

func newKubeletConfigMap(t *testing.T, dir, content string) *kubeletConfigMap {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	k := &kubeletConfigMap{t: t, dir: dir}
	k.update(content)
	if err := os.Symlink(filepath.Join("..data", "config.yml"), filepath.Join(dir, "config.yml")); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *kubeletConfigMap) file() string { return filepath.Join(k.dir, "config.yml") }

// update writes a new version and swaps `..data` to it in one rename, then
// removes the old version, as the kubelet's atomic writer does.
func (k *kubeletConfigMap) update(content string) {
	k.t.Helper()
	old, _ := os.Readlink(filepath.Join(k.dir, "..data"))
	k.version++
	ts := fmt.Sprintf("..2026_12_01_07_00_%02d.%d", k.version, 1000+k.version)
	if err := os.Mkdir(filepath.Join(k.dir, ts), 0o755); err != nil {
		k.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(k.dir, ts, "config.yml"), []byte(content), 0o644); err != nil {
		k.t.Fatal(err)
	}
	tmp := filepath.Join(k.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(k.dir, "..data")); err != nil {
		k.t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(k.dir, old)); err != nil {
			k.t.Fatal(err)
		}
	}
}

// TestReloadOnConfigMapChange mounts the configuration as the kubelet
// mounts a ConfigMap and changes it as the kubelet does: the agent sees the
// swap without a signal, seals the new shard, and reports each reload's
// outcome on /metrics; a broken version is refused and the running
// configuration kept; a change to a key only a restart applies is flagged.
func TestReloadOnConfigMapChange(t *testing.T) {
	e := newEnv(t)
	e.shardFile("a.bin", 1<<20, 1)
	e.shardFile("b.bin", 1<<20+7, 2)
	base := fmt.Sprintf("worker_id: e2e-node\ndevice: sim\nsim: {gpus: 2, memory_bytes: 4294967296}\nseal_secret_file: %s\nmodel_dirs: [%s]\naudit: {spool_dir: %s}\n",
		filepath.Join(e.dir, "seal.key"), e.models, filepath.Join(e.dir, "spool"))
	shard := func(id, file string, gpu int) string {
		return fmt.Sprintf("  - {id: %s, path: %s, gpu: %d}\n", id, filepath.Join(e.models, file), gpu)
	}
	cm := newKubeletConfigMap(t, filepath.Join(e.dir, "config"), base+"verify: {interval: 1m}\nshards:\n"+shard("a", "a.bin", 0))
	e.start("--config.file", cm.file(), "--config.auto-reload-interval", "100ms")
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	started := e.metric("vramseal_config_last_reload_success_timestamp_seconds")
	if e.metric("vramseal_config_last_reload_successful") != 1 || started <= 0 || e.metric("vramseal_config_restart_required") != 0 {
		t.Fatalf("after start-up: successful %v, timestamp %v, restart required %v", e.metric("vramseal_config_last_reload_successful"), started, e.metric("vramseal_config_restart_required"))
	}

	// A new version with shard b: sealed, no signal sent.
	time.Sleep(1100 * time.Millisecond) // so that the success timestamp moves by a second
	cm.update(base + "verify: {interval: 1m}\nshards:\n" + shard("a", "a.bin", 0) + shard("b", "b.bin", 1))
	e.waitFor("b sealed after the ConfigMap changed", func() bool { _, ok := e.list()["b"]; return ok })
	e.waitFor("the success timestamp moved", func() bool {
		return e.metric("vramseal_config_last_reload_success_timestamp_seconds") > started
	})
	if !strings.Contains(e.log.String(), "trigger=file_changed") {
		t.Error("the reload does not say it followed a change of the file")
	}
	good := e.metric("vramseal_config_last_reload_success_timestamp_seconds")

	// A broken version: refused, the running configuration kept.
	cm.update(base + "verify: {interval: 1m}\nshards:\n  - {id: c, path: [\n")
	e.waitFor("vramseal_config_last_reload_successful 0", func() bool { return e.metric("vramseal_config_last_reload_successful") == 0 })
	if l := e.list(); len(l) != 2 {
		t.Errorf("a refused reload changed the shards: %v", l)
	}
	if ts := e.metric("vramseal_config_last_reload_success_timestamp_seconds"); ts != good {
		t.Errorf("the success timestamp moved on a refused reload: %v, want %v", ts, good)
	}
	if code, _ := e.get("/readyz"); code != 200 {
		t.Errorf("/readyz %d after a refused reload, want 200 (the running configuration is fine)", code)
	}

	// Fixed, with a change that only a restart applies.
	cm.update(base + "verify: {interval: 2m}\nshards:\n" + shard("b", "b.bin", 1))
	e.waitFor("a released", func() bool { _, ok := e.list()["a"]; return !ok })
	e.waitFor("vramseal_config_last_reload_successful 1", func() bool { return e.metric("vramseal_config_last_reload_successful") == 1 })
	if e.metric("vramseal_config_restart_required") != 1 {
		t.Error("vramseal_config_restart_required is not 1 after verify.interval changed")
	}
	if !regexp.MustCompile(`restart the agent to apply changes to these keys.*keys="?\[verify\]`).MatchString(e.log.String()) {
		t.Error("the keys needing a restart are not logged")
	}
	// Back to the running values: no restart needed any more.
	cm.update(base + "verify: {interval: 1m}\nshards:\n" + shard("b", "b.bin", 1))
	e.waitFor("vramseal_config_restart_required 0", func() bool { return e.metric("vramseal_config_restart_required") == 0 })
}
