package cuda

import (
	"fmt"

	"github.com/ebitengine/purego"
)

// library is a loaded shared library: the three calls the driver binding
// needs, behind an interface so tests can fake a loader failure.
type library interface {
	// Sym returns the address of the exported symbol name.
	Sym(name string) (uintptr, error)
	// Close unloads the library.
	Close() error
}

// loader opens a shared library by path or name.
type loader func(path string) (library, error)

// dlLibrary is a library opened with dlopen (through purego, with or
// without cgo).
type dlLibrary struct {
	path   string
	handle uintptr
}

// dlOpen opens path with dlopen(RTLD_NOW|RTLD_LOCAL).
func dlOpen(path string) (library, error) {
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("dlopen %s: %w", path, err)
	}
	return &dlLibrary{path: path, handle: h}, nil
}

func (l *dlLibrary) Sym(name string) (uintptr, error) {
	p, err := purego.Dlsym(l.handle, name)
	if err != nil {
		return 0, fmt.Errorf("dlsym %s in %s: %w", name, l.path, err)
	}
	return p, nil
}

func (l *dlLibrary) Close() error {
	if err := purego.Dlclose(l.handle); err != nil {
		return fmt.Errorf("dlclose %s: %w", l.path, err)
	}
	return nil
}
