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

// Listen creates the control socket at path: its directory is created
// (0755) if missing, a stale socket left by a previous run is replaced
// (a live one is an error: another agent is running), and the socket is made
// mode 0600, or 0660 owned by group when group is not nil.
func Listen(path string, group *uint32) (*net.UnixListener, error) {
	fail := func(format string, args ...any) (*net.UnixListener, error) {
		return nil, fmt.Errorf("control socket %s: "+format, append([]any{path}, args...)...)
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
	mode := os.FileMode(0o600)
	if group != nil {
		if err := os.Chown(path, -1, int(*group)); err != nil {
			ln.Close()
			return fail("cannot give it to group %d: %w", *group, err)
		}
		mode = 0o660
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return fail("cannot set mode %04o: %w", mode, err)
	}
	return ln, nil
}
