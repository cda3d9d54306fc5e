package killtest

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// durableBound is how long a child waits for a record to become durable
// before it stops reporting on it.
const durableBound = 2 * time.Second

// ChildDir returns the folder the parent test passed to the child through
// the environment variable env, and false outside a child: the child test
// then returns at once, passing, as helper-process tests do (a skip would
// be listed among the tests that could not run).
func ChildDir(env string) (string, bool) {
	dir := os.Getenv(env)
	return dir, dir != ""
}

// SkipInChild skips the parent test t when it runs inside a child process.
func SkipInChild(t *testing.T, env string) {
	t.Helper()
	if os.Getenv(env) != "" {
		t.Skip("in the child")
	}
}

// Reporter prints the child's lines to stdout; it is safe for concurrent
// use.
type Reporter struct {
	mu sync.Mutex
}

// Ready tells the parent that the child is set up and emitting.
func (r *Reporter) Ready() { r.println("ready") }

// Durable reports id as durable, in the background, once the receipt says
// its record is durable (within two seconds; never otherwise).
func (r *Reporter) Durable(rc audit.Receipt, id string) {
	go func() {
		if audit.WaitDurable(context.Background(), rc, durableBound) == nil {
			r.println("durable", id)
		}
	}()
}

func (r *Reporter) println(a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Println(a...)
}

// Child says how to start the child process.
type Child struct {
	Test     string        // the child test's name, run as -test.run=^Test$
	Env      string        // the environment variable that carries Dir
	Dir      string        // the folder the child writes
	MaxDelay time.Duration // the kill comes 5ms plus up to MaxDelay after "ready"
}

// KillRound starts the child, waits for its "ready", kills it with SIGKILL
// after a random delay and returns the IDs it reported durable. round
// numbers the attempt in failure messages.
func (c Child) KillRound(t *testing.T, round int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+c.Test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), c.Env+"="+c.Dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1<<16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	if first := <-lines; first != "ready" {
		t.Fatalf("round %d: child said %q", round, first)
	}
	time.Sleep(5*time.Millisecond + rand.N(c.MaxDelay))
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	var durable []string
	for l := range lines {
		if id, ok := strings.CutPrefix(l, "durable "); ok {
			durable = append(durable, id)
		}
	}
	return durable
}
