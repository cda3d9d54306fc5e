package control

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/internal/testenv"
)

func TestAccessAllow(t *testing.T) {
	g := uint32(500)
	a := Access{OwnUID: 999, Group: &g, AllowedUIDs: []uint32{1000}, AllowedGIDs: []uint32{2000}}
	for _, tc := range []struct {
		p  Peer
		ok bool
	}{
		{Peer{UID: 0, GID: 0}, true},
		{Peer{UID: 999, GID: 1}, true},
		{Peer{UID: 1000, GID: 1}, true},
		{Peer{UID: 1001, GID: 500}, true},
		{Peer{UID: 1001, GID: 1, Groups: []uint32{7, 500}}, true},
		{Peer{UID: 1001, GID: 2000}, true},
		{Peer{UID: 1001, GID: 1, Groups: []uint32{2000}}, true},
		{Peer{UID: 1001, GID: 1, Groups: []uint32{501, 1999}}, false},
		{Peer{UID: 65534, GID: 65534}, false},
	} {
		ok, why := a.Allow(tc.p)
		if ok != tc.ok || why == "" {
			t.Errorf("%+v: allowed=%v (%s), want %v", tc.p, ok, why, tc.ok)
		}
	}
	if ok, _ := (Access{}).Allow(Peer{UID: 5}); ok {
		t.Error("empty Access lets a non-root user in")
	}
}

func TestPeerOfOwnProcess(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "p.sock")
	ln, err := Listen(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("unix", sock)
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := PeerOf(c)
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != uint32(os.Getuid()) || p.GID != uint32(os.Getgid()) || p.PID != int32(os.Getpid()) {
		t.Errorf("peer %+v, want this process", p)
	}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if !slices.Contains(p.Groups, uint32(g)) {
			t.Errorf("peer groups %v lack %d", p.Groups, g)
		}
	}
	if _, err := PeerOf(&net.TCPConn{}); err == nil {
		t.Error("PeerOf accepted a TCP connection")
	}
}

// TestHelperCall is run as a child process, under another uid, by
// TestCallerOfAnotherUser: it calls the API once and prints the status.
func TestHelperCall(t *testing.T) {
	sock := os.Getenv("VRAMSEAL_TEST_CALL_SOCKET")
	if sock == "" {
		return // only as the helper process of TestCallerOfAnotherUser
	}
	_, err := client.NewControl(sock, 5*time.Second).List(context.Background())
	status := apiStatus(err)
	if err == nil {
		status = 200
	}
	fmt.Printf("STATUS %d uid=%d\n", status, os.Getuid())
}

// TestCallerOfAnotherUser runs a real client process as uid 65534 against
// a socket whose file mode lets it connect, so only the peer-credential
// check decides.
func TestCallerOfAnotherUser(t *testing.T) {
	testenv.Root(t, "to start a process under another uid")
	exe := testenv.TestBinaryForAnyUser(t)
	const nobody, group = 65534, 4242
	gid := uint32(group)
	for _, tc := range []struct {
		name   string
		access Access
		status int
	}{
		{"not allowed", Access{OwnUID: 0}, 403},
		{"allowed uid", Access{AllowedUIDs: []uint32{nobody}}, 200},
		{"member of the control group (supplementary)", Access{Group: &gid}, 200},
		{"allowed gid (primary)", Access{AllowedGIDs: []uint32{nobody}}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 4<<20, tc.access, true)
			testenv.OpenUp(t, filepath.Dir(f.socket))
			if err := os.Chmod(f.socket, 0o666); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(exe, "-test.run=^TestHelperCall$", "-test.v")
			cmd.Env = append(os.Environ(), "VRAMSEAL_TEST_CALL_SOCKET="+f.socket)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{group}}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			want := fmt.Sprintf("STATUS %d uid=%d", tc.status, nobody)
			if !strings.Contains(string(out), want) {
				t.Fatalf("helper printed\n%s\nwant %q", out, want)
			}
			if tc.status != 403 {
				return
			}
			for _, e := range f.hook.AllEntries() {
				if e.Message == "control API call refused" && e.Data[logfield.PeerUID] == uint32(nobody) &&
					e.Data[logfield.PeerGID] == uint32(nobody) && e.Data[logfield.PeerPID] != nil && e.Data[logfield.Why] != nil {
					return
				}
			}
			t.Error("no refusal log line naming the caller's uid, gid and pid")
		})
	}
}

// openUp makes dir and its parents up to the temp root traversable by others.

func TestListen(t *testing.T) {
	dir := t.TempDir()
	mode := func(p string) os.FileMode {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return st.Mode().Perm()
	}
	// The directory is created, the socket is 0600.
	p := filepath.Join(dir, "a", "b", "agent.sock")
	ln, err := Listen(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(p); m != 0o600 {
		t.Errorf("socket mode %04o, want 0600", m)
	}
	// A live socket is not taken over.
	if _, err := Listen(p, nil); err == nil || !strings.Contains(err.Error(), "another agent is listening") {
		t.Errorf("second listener: %v", err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	// A stale one is replaced.
	ln, err = Listen(p, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("socket left behind after Close: %v", err)
	}
	// With a group: 0660 and owned by it.
	gid := uint32(os.Getgid())
	ln, err = Listen(p, &gid)
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(p); m != 0o660 {
		t.Errorf("socket mode %04o with a group, want 0660", m)
	}
	st, _ := os.Stat(p)
	if st.Sys().(*syscall.Stat_t).Gid != gid {
		t.Error("socket not owned by the group")
	}
	ln.Close()

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"parent is a file (not writable)", filepath.Join(file, "agent.sock"), "cannot create its directory"},
		{"path is a regular file", file, "exists and is not a socket"},
		{"path too long", filepath.Join(dir, strings.Repeat("x", 120)), "a Unix socket path holds at most 107"},
		{"unwritable directory", "/proc/vramseal/agent.sock", "cannot create its directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Listen(tc.path, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("Listen(%s): %v, want %q", tc.path, err, tc.want)
			}
		})
	}
}

func TestLookupGroup(t *testing.T) {
	if g, err := LookupGroup("4242"); err != nil || g != 4242 {
		t.Errorf("numeric: %d %v", g, err)
	}
	if g, err := LookupGroup("root"); err != nil || g != 0 {
		t.Errorf("root: %d %v", g, err)
	}
	if _, err := LookupGroup("no-such-group-vramseal"); err == nil {
		t.Error("unknown group accepted")
	}
}
