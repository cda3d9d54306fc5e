package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/workload"
)

// Peer is the process at the other end of a control connection, as the
// kernel reports it.
type Peer struct {
	PID int32
	UID uint32
	GID uint32
	// Groups are the supplementary groups.
	Groups []uint32
}

// Caller is the peer as audit events record it, with the Kubernetes pod
// and container its cgroup names, when it names them. A pid the kernel
// could not map into the agent's pid namespace (0), an executable or a
// cgroup that cannot be read are unknown (-1 and ""), never guessed. proc
// reads a process's files (/proc when its fields are nil).
func (p Peer) Caller(proc ProcReader) audit.Caller {
	if proc.Executable == nil {
		proc.Executable = ReadExecutable
	}
	if proc.Cgroup == nil {
		proc.Cgroup = ReadCgroup
	}
	c := audit.Caller{UID: int64(p.UID), GID: int64(p.GID), PID: -1}
	if p.PID > 0 {
		c.PID = int64(p.PID)
		if exe, err := proc.Executable(p.PID); err == nil {
			c.Executable = exe
		}
		if cg, err := proc.Cgroup(p.PID); err == nil {
			w := workload.ParseCgroup(cg)
			c.PodUID, c.ContainerID = w.PodUID, w.ContainerID
		}
	}
	return c
}

// ProcReader reads what Caller needs of a process (tests pass their own).
type ProcReader struct {
	Executable func(pid int32) (string, error)
	Cgroup     func(pid int32) (string, error)
}

// ReadExecutable reads /proc/PID/exe.
func ReadExecutable(pid int32) (string, error) {
	return os.Readlink("/proc/" + strconv.Itoa(int(pid)) + "/exe")
}

// ReadCgroup reads /proc/PID/cgroup.
func ReadCgroup(pid int32) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/cgroup")
	return string(b), err
}

// Access says who may call the control API besides root.
type Access struct {
	// OwnUID is the agent's own user, always allowed.
	OwnUID uint32
	// Group, when set, is the control group's gid: its members may call.
	Group *uint32
	// AllowedUIDs and AllowedGIDs may call too (a gid matches the peer's
	// primary or any supplementary group).
	AllowedUIDs []uint32
	AllowedGIDs []uint32
	// Section names the configuration section in reasons ("control" when
	// empty; "handoff" for the consumer socket).
	Section string
}

// Allow decides whether p may call, and says why (the reason is logged).
func (a Access) Allow(p Peer) (bool, string) {
	sec := a.Section
	if sec == "" {
		sec = "control"
	}
	switch {
	case p.UID == 0:
		return true, "root"
	case p.UID == a.OwnUID:
		return true, "the agent's own user"
	case slices.Contains(a.AllowedUIDs, p.UID):
		return true, "uid in " + sec + ".allowed_uids"
	}
	groups := append([]uint32{p.GID}, p.Groups...)
	if a.Group != nil && slices.Contains(groups, *a.Group) {
		return true, "member of " + sec + ".group"
	}
	for _, g := range groups {
		if slices.Contains(a.AllowedGIDs, g) {
			return true, "gid in " + sec + ".allowed_gids"
		}
	}
	return false, fmt.Sprintf("uid %d is neither root, the agent's user, in %s.allowed_uids, nor in %s.group or %s.allowed_gids", p.UID, sec, sec, sec)
}

type peerKey struct{}

// withPeer stores a connection's peer (or the error reading it) in ctx.
func withPeer(ctx context.Context, p Peer, err error) context.Context {
	return context.WithValue(ctx, peerKey{}, peerResult{p, err})
}

type peerResult struct {
	p   Peer
	err error
}

func peerFrom(ctx context.Context) (Peer, error) {
	r, ok := ctx.Value(peerKey{}).(peerResult)
	if !ok {
		return Peer{}, errors.New("no peer credentials on this connection")
	}
	return r.p, r.err
}

// PeerOf reads the peer credentials of a Unix socket connection.
func PeerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("connection is a %T, not a Unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var (
		p       Peer
		credErr error
		grpErr  error
	)
	err = raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			credErr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p = Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
		p.Groups, grpErr = peerGroups(int(fd))
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return Peer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if grpErr != nil {
		// Kernels before 4.13 lack SO_PEERGROUPS: read the caller's groups
		// from /proc instead.
		p.Groups, err = procGroups(p.PID)
		if err != nil {
			return Peer{}, fmt.Errorf("peer groups: %w (SO_PEERGROUPS: %v)", err, grpErr)
		}
	}
	return p, nil
}

// peerGroups reads SO_PEERGROUPS.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for range 4 {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e == syscall.ERANGE {
			buf = make([]uint32, n/4+1)
			continue
		}
		if e != 0 {
			return nil, e
		}
		return slices.Clone(buf[:n/4]), nil
	}
	return nil, errors.New("SO_PEERGROUPS: group list keeps growing")
}

// procGroups reads a process's supplementary groups from /proc.
func procGroups(pid int32) ([]uint32, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var out []uint32
		for _, g := range strings.Fields(rest) {
			n, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("/proc/%d/status: group %q: %w", pid, g, err)
			}
			out = append(out, uint32(n))
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("/proc/%d/status: no Groups line", pid)
}
