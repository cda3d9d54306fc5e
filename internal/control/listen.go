package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// maxSocketPath is the longest path a Unix socket address holds on Linux.
const maxSocketPath = 107

// LookupGroup resolves a group name or numeric id to a gid.
func LookupGroup(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("control group %q: %w", name, err)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("control group %q: gid %q: %w", name, g.Gid, err)
	}
	return uint32(n), nil
}

// Listen creates a Unix socket (the control or the consumer socket) at path: its directory is created
// (0755) if missing, a stale socket left by a previous run is replaced
// (a live one is an error: another agent is running), and the socket is made
// mode 0600, or 0660 owned by group when group is not nil.
func Listen(path string, group *uint32) (*net.UnixListener, error) {
	fail := func(format string, args ...any) (*net.UnixListener, error) {
		return nil, fmt.Errorf("socket %s: "+format, append([]any{path}, args...)...)
	}
	if path == "" {
		return fail("no path given")
	}
	if len(path) > maxSocketPath {
		return fail("path is %d bytes long; a Unix socket path holds at most %d", len(path), maxSocketPath)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fail("cannot create its directory: %w", err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().Type() != fs.ModeSocket {
			return fail("exists and is not a socket; not replacing it")
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return fail("another agent is listening on it")
		}
		if err := os.Remove(path); err != nil {
			return fail("cannot remove the stale socket: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail("%w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fail("cannot listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := setSocketAccess(path, group); err != nil {
		ln.Close()
		return fail("%w", err)
	}
	return ln, nil
}

// setSocketAccess gives the socket at path mode 0600, or group and mode
// 0660. It works on the file opened without following a symlink (O_PATH,
// then through its /proc/self/fd link), so a symlink put in the socket's
// place after it was bound is refused, never followed: the agent never
// changes the mode or group of a file someone else points it at.
func setSocketAccess(path string, group *uint32) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot open it to set its mode: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("cannot stat it: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return errors.New("was replaced by something that is not a socket while it was being created")
	}
	self := fmt.Sprintf("/proc/self/fd/%d", fd)
	mode := os.FileMode(0o600)
	if group != nil {
		if err := unix.Fchownat(fd, "", -1, int(*group), unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("cannot give it to group %d: %w", *group, err)
		}
		mode = 0o660
	}
	err = os.Chmod(self, mode)
	if errors.Is(err, fs.ErrNotExist) {
		// No /proc: by path, after checking again that a socket is there.
		if lst, lerr := os.Lstat(path); lerr != nil || lst.Mode().Type() != fs.ModeSocket {
			return errors.New("was replaced by something that is not a socket while it was being created")
		}
		err = os.Chmod(path, mode)
	}
	if err != nil {
		return fmt.Errorf("cannot set mode %04o: %w", mode, err)
	}
	return nil
}
