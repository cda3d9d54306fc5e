package cuda

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// DriverFolders are the folders Open tries, in order, for DefaultLibrary
// after the loader's own search found none: where GPU containers mount the
// driver (the Kubernetes device plugins' /usr/local/nvidia), then the
// distributions' library folders, which a container's loader cache may not
// list when the driver is mounted in after the image was built. A CUDA
// toolkit's stubs folder is never one: its libcuda.so only answers
// CUDA_ERROR_STUB_LIBRARY.
func DriverFolders(goarch string) []string {
	multiarch := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[goarch]
	dirs := []string{"/usr/local/nvidia/lib64", "/usr/local/nvidia/lib"}
	if multiarch != "" {
		dirs = append(dirs, "/usr/lib/"+multiarch)
	}
	return append(dirs, "/usr/lib64", "/usr/lib")
}

// libraryCandidates is what Open tries to load, in order: the configured
// path alone, or DefaultLibrary through the loader's search and then in
// each of the driver folders. Nothing is executed to find it (no
// ldconfig: the image may have none).
func libraryCandidates(configured, goarch string) []string {
	if configured != "" {
		return []string{configured}
	}
	out := []string{DefaultLibrary}
	for _, d := range DriverFolders(goarch) {
		out = append(out, filepath.Join(d, DefaultLibrary))
	}
	return out
}

// loadDriver loads the first candidate that opens and returns it with the
// name it was opened by; when none opens, the error lists every attempt.
func loadDriver(load loader, configured string) (library, string, error) {
	var errs []error
	for _, c := range libraryCandidates(configured, runtime.GOARCH) {
		lib, err := load(c)
		if err == nil {
			return lib, c, nil
		}
		errs = append(errs, err)
	}
	if configured == "" {
		return nil, "", fmt.Errorf("%s is neither on the loader path nor in %s (set cuda.library to its path): %w",
			DefaultLibrary, strings.Join(DriverFolders(runtime.GOARCH), ", "), errors.Join(errs...))
	}
	return nil, "", errors.Join(errs...)
}

// mappedFile returns the file mapped at addr in this process (from
// /proc/self/maps), or "" when it cannot tell: how Open learns which file
// the loader chose for a bare library name, without running anything.
func mappedFile(addr uintptr) string {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return ""
	}
	return fileAt(maps, addr)
}

// fileAt finds the mapping holding addr in the text of /proc/PID/maps
// ("start-end perms offset dev inode path") and returns its path.
func fileAt(maps []byte, addr uintptr) string {
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !strings.HasPrefix(f[5], "/") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && uint64(addr) >= start && uint64(addr) < end {
			return strings.Join(f[5:], " ")
		}
	}
	return ""
}
