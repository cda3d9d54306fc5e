//go:build crashpoints

package crashpoint

import (
	"os"
	"sync"
)

// Environment of a crash test's agent.
const (
	// EnvPoint names the point to stop at.
	EnvPoint = "VRAMSEAL_CRASHPOINT"
	// EnvFIFO names the FIFO the point's name is written to.
	EnvFIFO = "VRAMSEAL_CRASHPOINT_FIFO"
)

var (
	once  sync.Once
	point string
	fifo  string
)

// Hit stops the process forever at the point named by VRAMSEAL_CRASHPOINT,
// after writing its name to the FIFO in VRAMSEAL_CRASHPOINT_FIFO; any other
// point passes.
func Hit(name string) {
	once.Do(func() { point, fifo = os.Getenv(EnvPoint), os.Getenv(EnvFIFO) })
	if name != point || fifo == "" {
		return
	}
	if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
		_, _ = f.WriteString(name + "\n")
		_ = f.Close()
	}
	select {} // until SIGKILL
}
