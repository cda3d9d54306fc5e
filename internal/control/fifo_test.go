package control

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A file swapped for a FIFO between the check and the open must be
// refused, never waited on: opening a FIFO for reading blocks until a
// writer comes, which would hang the seal request (and the agent's
// shutdown) for good.
func TestOpenModelFileNeverBlocksOnFIFO(t *testing.T) {
	models := t.TempDir()
	target := filepath.Join(models, "a.bin")
	reg, fifo := filepath.Join(models, "reg"), filepath.Join(models, "fifo")
	stop := make(chan struct{})
	swapped := make(chan struct{})
	go func() {
		defer close(swapped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Put a regular file, then a FIFO, at the checked path.
			if err := os.WriteFile(reg, []byte("weights"), 0o600); err != nil {
				t.Error(err)
				return
			}
			if err := os.Rename(reg, target); err != nil {
				t.Error(err)
				return
			}
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Error(err)
				return
			}
			if err := os.Rename(fifo, target); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() {
		close(stop)
		<-swapped
		// Unblock an open stuck on the FIFO, if any.
		if w, err := os.OpenFile(target, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		end := time.Now().Add(2 * time.Second)
		for time.Now().Before(end) {
			if f, _, err := OpenModelFile([]string{models}, target); err == nil {
				st, err := f.Stat()
				if err != nil || !st.Mode().IsRegular() {
					t.Errorf("opened a non-regular file: %v, %v", st.Mode(), err)
				}
				f.Close()
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("OpenModelFile blocked opening a FIFO swapped in after the check")
	}
}
