//go:build crashpoints

package crashpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Environment of a crash test's agent.
const (
	// EnvPoint names the point to stop at, as NAME or NAME@N: stop at the
	// Nth time the point is reached (the first when N is not given).
	EnvPoint = "VRAMSEAL_CRASHPOINT"
	// EnvFIFO names the FIFO the point's name is written to.
	EnvFIFO = "VRAMSEAL_CRASHPOINT_FIFO"
)

var (
	once  sync.Once
	point string
	nth   int64 = 1
	fifo  string
	hits  atomic.Int64
)

func load() {
	point, fifo = os.Getenv(EnvPoint), os.Getenv(EnvFIFO)
	if name, n, ok := strings.Cut(point, "@"); ok {
		point = name
		if v, err := strconv.ParseInt(n, 10, 64); err == nil && v > 0 {
			nth = v
		}
	}
}

// Hit stops the process forever at the point named by VRAMSEAL_CRASHPOINT,
// after writing its name to the FIFO in VRAMSEAL_CRASHPOINT_FIFO; any other
// point, and the same point before its Nth time, passes.
func Hit(name string) {
	once.Do(load)
	if name != point || fifo == "" || hits.Add(1) != nth {
		return
	}
	if f, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
		_, _ = f.WriteString(name + "\n")
		_ = f.Close()
	}
	select {} // until SIGKILL
}
