package control

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/testenv"
)

func noCgroup(int32) (string, error) { return "", errors.New("no cgroup") }

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
		if got := c.peer.Caller(ProcReader{Executable: exe, Cgroup: noCgroup}); got != c.want {
			t.Errorf("%+v: %+v, want %+v", c.peer, got, c.want)
		}
	}
}

// TestPeerServerChild is the server of TestPeerInAnotherPidNamespace: in
// its own pid namespace, it accepts one connection and prints the caller as
// an audit event would record it.
func TestPeerServerChild(t *testing.T) {
	sock := os.Getenv("VRAMSEAL_TEST_PEER_SOCKET")
	if sock == "" {
		return // only as the child of TestPeerInAnotherPidNamespace
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	fmt.Println("LISTENING")
	c, err := ln.Accept()
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	p, err := PeerOf(c)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	c2 := p.Caller(ProcReader{})
	fmt.Printf("RAW_PID %d CALLER uid=%d gid=%d pid=%d exe=%q\n", p.PID, c2.UID, c2.GID, c2.PID, c2.Executable)
}

// TestPeerInAnotherPidNamespace: an agent in its own pid namespace sees a
// caller from outside it with pid 0 (SO_PEERCRED), and records the pid as
// unknown (-1) and the executable as unknown (""), never guessed.
func TestPeerInAnotherPidNamespace(t *testing.T) {
	testenv.Root(t, "to start a process in a new pid namespace")
	sock := filepath.Join(t.TempDir(), "peer.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestPeerServerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "VRAMSEAL_TEST_PEER_SOCKET="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		testenv.Missing(t, "cannot start a process in a new pid namespace: %v", err)
	}
	defer cmd.Wait()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "LISTENING" {
		t.Fatalf("the server said %q", lines.Text())
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !lines.Scan() {
		t.Fatal("the server said nothing")
	}
	got := lines.Text()
	want := fmt.Sprintf(`RAW_PID 0 CALLER uid=%d gid=%d pid=-1 exe=""`, os.Getuid(), os.Getgid())
	if got != want {
		t.Errorf("the server saw %q, want %q", got, want)
	}
}
