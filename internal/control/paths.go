package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// errOutsideModelDirs marks a path the API refuses to seal.
var errOutsideModelDirs = errors.New("not a regular file under the model directories")

// ResolveModelFile resolves p (absolute) with every symlink followed and
// returns it if it is a regular file under one of dirs (also resolved).
// Every refusal wraps errOutsideModelDirs and says why.
func ResolveModelFile(dirs []string, p string) (string, error) {
	refuse := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("%w: "+format, append([]any{errOutsideModelDirs}, args...)...)
	}
	if len(dirs) == 0 {
		return refuse("no model_dirs are configured, so the API seals no files")
	}
	if !filepath.IsAbs(p) {
		return refuse("%q is not an absolute path", p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return refuse("%s: %v", p, unwrapPathErr(err))
	}
	st, err := os.Stat(real)
	if err != nil {
		return refuse("%s: %v", p, unwrapPathErr(err))
	}
	if !st.Mode().IsRegular() {
		what := "not a regular file"
		if st.IsDir() {
			what = "a directory"
		}
		return refuse("%s is %s", p, what)
	}
	for _, d := range dirs {
		rd, err := filepath.EvalSymlinks(d)
		if err != nil {
			continue
		}
		if within(rd, real) {
			return real, nil
		}
	}
	if real != filepath.Clean(p) {
		return refuse("%s resolves to %s, outside %s", p, real, strings.Join(dirs, ", "))
	}
	return refuse("%s is outside %s", p, strings.Join(dirs, ", "))
}

// OpenModelFile resolves p like ResolveModelFile, opens the result without
// following a final symlink, and checks again, on the opened file itself
// (its /proc/self/fd link and fstat), that it is a regular file under one of
// dirs. The sealer then reads that very file: a path swapped for a symlink
// between the check and the open is refused, never followed.
func OpenModelFile(dirs []string, p string) (*os.File, string, error) {
	real, err := ResolveModelFile(dirs, p)
	if err != nil {
		return nil, "", err
	}
	// O_NONBLOCK: a FIFO swapped in after the check opens at once (and is
	// refused below) instead of blocking until a writer comes; it changes
	// nothing for reading a regular file. O_NOCTTY: never take a terminal.
	f, err := openNoSymlinks(real)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s: %v", errOutsideModelDirs, p, unwrapPathErr(err))
	}
	actual, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		actual = real // no /proc: the O_NOFOLLOW open above still holds
	}
	st, err := f.Stat()
	inside := false
	for _, d := range dirs {
		if rd, err := filepath.EvalSymlinks(d); err == nil && within(rd, actual) {
			inside = true
			break
		}
	}
	if err != nil || !st.Mode().IsRegular() || !inside {
		f.Close()
		return nil, "", fmt.Errorf("%w: %s changed while it was being opened (now %s)", errOutsideModelDirs, p, actual)
	}
	return f, actual, nil
}

// openNoSymlinks opens real (a path already resolved, so it holds no
// symlink) for reading, refusing a symlink anywhere on it: one that appears
// now was swapped in after the check. It uses openat2(RESOLVE_NO_SYMLINKS)
// and, on kernels without it (before 5.6), O_NOFOLLOW on the last component,
// which the check on the opened file then completes.
func openNoSymlinks(real string) (*os.File, error) {
	flags := os.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_NOCTTY | syscall.O_CLOEXEC
	fd, err := unix.Openat2(unix.AT_FDCWD, real, &unix.OpenHow{Flags: uint64(flags), Resolve: unix.RESOLVE_NO_SYMLINKS})
	switch {
	case err == nil:
		return os.NewFile(uintptr(fd), real), nil
	case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM): // no openat2, or a seccomp filter refusing it
		return os.OpenFile(real, flags, 0)
	default:
		return nil, &os.PathError{Op: "open", Path: real, Err: err}
	}
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// within reports whether p lies inside dir (both clean and absolute).
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}
