package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func waitChanged(t *testing.T, w *configWatch, want bool) {
	t.Helper()
	select {
	case <-w.Changed():
		if !want {
			t.Fatal("a change was reported where there was none")
		}
	case <-time.After(500 * time.Millisecond):
		if want {
			t.Fatal("the change was not reported")
		}
	}
}

// TestConfigWatch: an edit in place, a kubelet-style swap of ..data and a
// file that disappears are each reported once; nothing else is.
func TestConfigWatch(t *testing.T) {
	dir := t.TempDir()
	cm := newKubeletConfigMap(t, filepath.Join(dir, "cm"), "shards: []\n")
	plain := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(plain, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	w := newConfigWatch(cm.file(), 20*time.Millisecond)
	go w.Run(ctx)
	waitChanged(t, w, false)
	cm.update("shards: [{id: a, path: /m/a, gpu: 0}]\n")
	waitChanged(t, w, true)
	waitChanged(t, w, false)
	cm.update("shards: [{id: a, path: /m/a, gpu: 0}]\n") // same content, new version
	waitChanged(t, w, true)

	h := newConfigWatch(plain, 20*time.Millisecond)
	go h.Run(ctx)
	if err := os.WriteFile(plain, []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, h, true)
	if err := os.Remove(plain); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, h, true)
	waitChanged(t, h, false)

	off := newConfigWatch(plain, 0)
	done := make(chan struct{})
	go func() { _ = off.Run(ctx); close(done) }()
	if err := os.WriteFile(plain, []byte("c"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitChanged(t, off, false)
	cancel()
	<-done
}
