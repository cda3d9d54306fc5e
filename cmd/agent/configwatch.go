package main

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"time"
)

// configWatch polls the configuration file's directory and reports when
// what the file path reads as has changed. On Kubernetes the ConfigMap is
// mounted as a directory: the kubelet writes each new version into a fresh
// hidden directory and swaps the `..data` symlink to it in one rename, and
// config.yml is a symlink through `..data`; an inotify watch on the file
// itself would stay on the old version forever. Polling the directory (the
// `..data` link, and the file's contents through it) sees every swap, as
// well as an in-place edit on a host, and needs no dependency.
type configWatch struct {
	file     string
	interval time.Duration
	last     [sha256.Size]byte
	changed  chan struct{}
}

// newConfigWatch takes the file's fingerprint now (before the agent loads
// it, so a change in between is seen, not lost).
func newConfigWatch(file string, interval time.Duration) *configWatch {
	w := &configWatch{file: file, interval: interval, changed: make(chan struct{}, 1)}
	w.last = w.fingerprint()
	return w
}

// fingerprint digests the `..data` link's target (when there is one) and
// the file's contents; a file that cannot be read digests its error, so
// a file that disappears or comes back counts as a change too.
func (w *configWatch) fingerprint() [sha256.Size]byte {
	h := sha256.New()
	if target, err := os.Readlink(filepath.Join(filepath.Dir(w.file), "..data")); err == nil {
		h.Write([]byte(target))
	}
	h.Write([]byte{0})
	if data, err := os.ReadFile(w.file); err != nil {
		h.Write([]byte("error: " + err.Error()))
	} else {
		h.Write(data)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// Changed receives a value after each change (changes seen before the last
// was received are merged into one).
func (w *configWatch) Changed() <-chan struct{} { return w.changed }

// Run polls every interval until ctx ends; it returns nil then. An interval
// of 0 turns the watch off (Run only waits).
func (w *configWatch) Run(ctx context.Context) error {
	if w.interval <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if sum := w.fingerprint(); sum != w.last {
			w.last = sum
			select {
			case w.changed <- struct{}{}:
			default: // a change is already waiting
			}
		}
	}
}
