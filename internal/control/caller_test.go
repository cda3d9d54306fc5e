package control

import (
	"errors"
	"testing"

	"github.com/vramseal/vramseal/audit"
)

// TestPeerCaller: a peer in another pid namespace (SO_PEERCRED pid 0) and
// an executable that cannot be read are recorded as unknown, not guessed.
func TestPeerCaller(t *testing.T) {
	exe := func(pid int32) (string, error) {
		if pid == 42 {
			return "/usr/bin/engine", nil
		}
		return "", errors.New("no such process")
	}
	for _, c := range []struct {
		peer Peer
		want audit.Caller
	}{
		{Peer{PID: 42, UID: 1000, GID: 100}, audit.Caller{UID: 1000, GID: 100, PID: 42, Executable: "/usr/bin/engine"}},
		{Peer{PID: 0, UID: 1000, GID: 100}, audit.Caller{UID: 1000, GID: 100, PID: -1}},
		{Peer{PID: 7, UID: 0, GID: 0}, audit.Caller{UID: 0, GID: 0, PID: 7}},
	} {
		if got := c.peer.Caller(exe); got != c.want {
			t.Errorf("%+v: %+v, want %+v", c.peer, got, c.want)
		}
	}
}
