package control

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The socket's mode is set by path after it is bound. Someone who can
// write to the socket's directory and puts a symlink in its place in
// between must not get the agent to change the mode of the file the
// symlink points to.
func TestListenNeverChmodsThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tmp := filepath.Join(dir, "link")
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = os.Remove(tmp)
			if err := os.Symlink(victim, tmp); err != nil {
				t.Error(err)
				return
			}
			_ = os.Rename(tmp, sock) // replaces whatever is there, our socket included
		}
	}()
	end := time.Now().Add(2 * time.Second)
	for time.Now().Before(end) {
		_ = os.Remove(sock)
		if ln, err := Listen(sock, nil); err == nil {
			ln.SetUnlinkOnClose(false)
			ln.Close()
		}
		if st, err := os.Stat(victim); err != nil || st.Mode().Perm() != 0o644 {
			close(stop)
			<-done
			t.Fatalf("Listen changed the mode of a symlink's target: %v, %v", st.Mode(), err)
		}
	}
	close(stop)
	<-done
}
