package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/testenv"
)

// The load test's shape: the numbers.
const (
	loadClients  = 64
	loadDuration = 30 * time.Second
	loadShards   = 8
	loadShardLen = 1 << 20
	// floodUID is the unprivileged caller that floods forged seal records.
	floodUID = 65534
	// floodRate is its rate limit (calls a second, and the burst).
	floodRate = 5
)

// Environment of the flooding helper: the test binary, run again as
// floodUID, floods instead of testing (TestMain).
const (
	floodEnvSocket   = "VRAMSEAL_LOADTEST_FLOOD_SOCKET"
	floodEnvRecord   = "VRAMSEAL_LOADTEST_FLOOD_RECORD"
	floodEnvDuration = "VRAMSEAL_LOADTEST_FLOOD_DURATION"
)

// floodResult is what the flooding helper prints when it is done.
type floodResult struct {
	Refused     int    `json:"refused"`      // 429
	Rejected    int    `json:"rejected"`     // let through, and the forged record refused (signature_invalid)
	Unexpected  int    `json:"unexpected"`   // anything else
	FirstOddity string `json:"first_oddity"` // the first unexpected answer
}

// runFlood is the flooding helper's main: 16 goroutines presenting a
// forged seal record as fast as they can, for the duration.
func runFlood() int {
	record, err := os.ReadFile(os.Getenv(floodEnvRecord))
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		return 2
	}
	d, err := time.ParseDuration(os.Getenv(floodEnvDuration))
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		return 2
	}
	c := client.NewControl(os.Getenv(floodEnvSocket), 10*time.Second)
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var res floodResult
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil {
				resp, err := c.VerifySeal(context.Background(), record)
				var ae *client.APIError
				mu.Lock()
				switch {
				case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests && ae.Kind == client.KindRateLimited:
					res.Refused++
				case err == nil && !resp.Intact && len(resp.Results) == 1 && resp.Results[0].Result == "signature_invalid":
					res.Rejected++
				default:
					res.Unexpected++
					if res.FirstOddity == "" {
						res.FirstOddity = fmt.Sprintf("%+v %v", resp, err)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// flooder is the flooding helper running as floodUID.
type flooder struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// startFlood runs the test binary (copied where floodUID can run it) as
// floodUID for d.
func startFlood(t *testing.T, bin, socket, record string, d time.Duration) *flooder {
	t.Helper()
	f := &flooder{cmd: exec.Command(bin, "-test.run=^$")}
	f.cmd.Env = append(os.Environ(), floodEnvSocket+"="+socket, floodEnvRecord+"="+record, floodEnvDuration+"="+d.String())
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: floodUID, Gid: floodUID}}
	f.cmd.Stdout, f.cmd.Stderr = &f.out, &f.out
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("starting the flood as uid %d: %v", floodUID, err)
	}
	return f
}

func (f *flooder) wait(t *testing.T) floodResult {
	t.Helper()
	if err := f.cmd.Wait(); err != nil {
		t.Fatalf("flood: %v\n%s", err, f.out.String())
	}
	var r floodResult
	if err := json.Unmarshal(bytes.TrimSpace(f.out.Bytes()), &r); err != nil {
		t.Fatalf("flood output: %v\n%s", err, f.out.String())
	}
	return r
}

// opStats are the latencies and errors of one operation.
type opStats struct {
	lat    []time.Duration
	errors int
	first  string
}

type loadStats struct {
	mu  sync.Mutex
	ops map[string]*opStats
}

func (s *loadStats) add(op string, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.ops[op]
	if o == nil {
		o = &opStats{}
		s.ops[op] = o
	}
	o.lat = append(o.lat, d)
	if err != nil {
		o.errors++
		if o.first == "" {
			o.first = err.Error()
		}
	}
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// table writes the per-operation table; it returns the errors in total.
func (s *loadStats) table(w io.Writer) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.ops))
	for n := range s.ops {
		names = append(names, n)
	}
	slices.Sort(names)
	fmt.Fprintf(w, "%-12s %8s %8s %10s %10s %10s\n", "operation", "calls", "errors", "error rate", "p50", "p99")
	total := 0
	for _, n := range names {
		o := s.ops[n]
		slices.Sort(o.lat)
		fmt.Fprintf(w, "%-12s %8d %8d %9.3f%% %10s %10s\n", n, len(o.lat), o.errors, 100*float64(o.errors)/float64(max(1, len(o.lat))),
			pct(o.lat, 0.50).Round(10*time.Microsecond), pct(o.lat, 0.99).Round(10*time.Microsecond))
		total += o.errors
	}
	return total
}

// client is one of the load's callers: a mix of list, verify, verify of a
// presented seal record, seal and release, until ctx ends.
func loadClient(ctx context.Context, i int, c *client.Control, stats *loadStats, file string, records [][]byte) {
	rng := rand.New(rand.NewPCG(uint64(i), 12))
	op := func(name string, fn func() error) {
		start := time.Now()
		err := fn()
		stats.add(name, time.Since(start), err)
	}
	octx := context.WithoutCancel(ctx) // a call in flight at the end completes
	for n := 0; ctx.Err() == nil; n++ {
		switch k := rng.IntN(100); {
		case k < 25:
			op("list", func() error {
				shards, err := c.List(octx)
				if err == nil && len(shards) < loadShards {
					err = fmt.Errorf("list: %d shards, want at least %d", len(shards), loadShards)
				}
				return err
			})
		case k < 55:
			id := fmt.Sprintf("s%d", rng.IntN(loadShards))
			op("verify", func() error {
				r, err := c.Verify(octx, id)
				if err == nil && !r.Intact {
					err = fmt.Errorf("verify %s: %+v", id, r.Results)
				}
				return err
			})
		case k < 75:
			rec := records[rng.IntN(len(records))]
			op("verify_seal", func() error {
				r, err := c.VerifySeal(octx, rec)
				if err == nil && !r.Intact {
					err = fmt.Errorf("verify --seal: %+v", r.Results)
				}
				return err
			})
		default:
			id := fmt.Sprintf("c%02d-%d", i, n)
			var sealErr error
			op("seal", func() error {
				_, sealErr = c.Seal(octx, client.SealRequest{ID: id, Path: file, GPU: n % 2})
				return sealErr
			})
			if sealErr == nil {
				op("release", func() error { _, err := c.Release(octx, id, false); return err })
			}
		}
	}
}

// TestLoad: 64 clients mix list, verify, seal, release and presented-seal
// verifies for 30 s while an unprivileged uid floods forged seal records
// under a rate limit; no call fails, the flood is refused with 429 and
// counted, and the agent's descriptors and goroutines come back to where
// they were. Then a digest mismatch found during a flood is in the spool
// when the agent is SIGKILLed right after the call returns. The table is
// logged and written to $TMPDIR/vramseal-loadtest.txt. Nothing is timed.
func TestLoad(t *testing.T) {
	testenv.Root(t, "the forged-seal flood runs as another, unprivileged uid")
	if testing.Short() {
		t.Skip("the load test runs for 30s")
	}
	e := newSharedEnv(t)
	for i := range loadShards {
		e.shardFile(fmt.Sprintf("s%d.bin", i), loadShardLen, byte(i))
	}
	e.shardFile("victim.bin", loadShardLen, 99)
	sealFile := e.shardFile("seal.bin", loadShardLen, 100)
	shards := []string{"victim:victim.bin:0"}
	for i := range loadShards {
		shards = append(shards, fmt.Sprintf("s%d:s%d.bin:%d", i, i, i%2))
	}
	e.verify = "{interval: 10s, jitter: 0.1}"
	e.writeConfigWith("sim", fmt.Sprintf("sim: {gpus: 2, memory_bytes: 1073741824}\ncontrol: {group: %q, allowed_uids: [%d], rate_limit: {requests_per_second: %d, burst: %d}}\n",
		strconv.Itoa(floodUID), floodUID, floodRate, floodRate), shards...)
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	e.start("--log.level", "warn")
	root := client.NewControl(e.socket, 30*time.Second)
	ctx := context.Background()
	e.waitFor("readiness", func() bool { st, err := root.Status(ctx); return err == nil && st.Ready })

	// The forged record: a genuine one with another digest.
	list, err := root.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var records [][]byte
	for _, sh := range list {
		if sh.Seal.ShardID != "victim" {
			records = append(records, []byte(sh.Seal.JSON()))
		}
	}
	forged := list[0].Seal
	forged.Digest = "sha256-tree-v1:" + strings.Repeat("0", 64)
	forgedFile := filepath.Join(e.dir, "forged.json")
	floodBin := filepath.Join(e.dir, "flood.test")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, self, floodBin, 0o755)
	if err := os.WriteFile(forgedFile, []byte(forged.JSON()), 0o644); err != nil {
		t.Fatal(err)
	}

	pid := e.cmd.Process.Pid
	root.CloseIdleConnections() // the baseline holds no connection of ours
	fds0, gor0 := e.settled(pid, nil)
	t.Logf("before the load: %d open descriptors, %d goroutines", fds0, gor0)

	flood := startFlood(t, floodBin, e.socket, forgedFile, loadDuration)
	stats := &loadStats{ops: map[string]*opStats{}}
	lctx, stop := context.WithTimeout(ctx, loadDuration)
	defer stop()
	clients := make([]*client.Control, loadClients)
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = client.NewControl(e.socket, 30*time.Second)
		wg.Go(func() { loadClient(lctx, i, clients[i], stats, sealFile, records) })
	}
	wg.Wait()
	fr := flood.wait(t)
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	root.CloseIdleConnections()

	var table bytes.Buffer
	fmt.Fprintf(&table, "%d clients for %s (agent on 2 simulated GPUs, %d shards of %d MiB; %d cores)\n",
		loadClients, loadDuration, loadShards, loadShardLen>>20, runtime.NumCPU())
	errs := stats.table(&table)
	fmt.Fprintf(&table, "flood from uid %d (rate limit %d/s, burst %d): %d refused with 429, %d let through and rejected (signature_invalid), %d unexpected\n",
		floodUID, floodRate, floodRate, fr.Refused, fr.Rejected, fr.Unexpected)
	t.Logf("\n%s", table.String())
	report := filepath.Join(os.TempDir(), "vramseal-loadtest.txt")
	if err := os.WriteFile(report, table.Bytes(), 0o644); err == nil {
		t.Logf("table written to %s", report)
	}
	if errs != 0 {
		for n, o := range stats.ops {
			if o.errors > 0 {
				t.Errorf("%s: %d errors, the first: %s", n, o.errors, o.first)
			}
		}
	}
	if fr.Unexpected != 0 || fr.Refused == 0 {
		t.Errorf("flood: %+v; want refusals and nothing unexpected", fr)
	}
	// Every refusal is counted.
	if got := e.metric("vramseal_control_rate_limited_total"); got != float64(fr.Refused) {
		t.Errorf("vramseal_control_rate_limited_total %g, the flood saw %d refusals", got, fr.Refused)
	}

	fds1, gor1 := e.settled(pid, &[2]int{fds0, gor0})
	t.Logf("after the load: %d open descriptors, %d goroutines", fds1, gor1)
	if fds1 > fds0 || gor1 > gor0 {
		t.Errorf("after the load %d descriptors and %d goroutines, before %d and %d", fds1, gor1, fds0, gor0)
	}

	// A genuine mismatch, verified during a flood: its record is in the
	// spool when the agent is killed right after the call returns.
	flood = startFlood(t, floodBin, e.socket, forgedFile, 3*time.Second)
	time.Sleep(time.Second) // let the flood start (not a timing assertion)
	if _, err := root.Debug(ctx, "corrupt", client.CorruptRequest{ID: "victim", Offset: 12345, Bit: 3}); err != nil {
		t.Fatal(err)
	}
	res, err := root.Verify(ctx, "victim")
	_ = e.cmd.Process.Signal(syscall.SIGKILL)
	if err != nil || res.Intact || len(res.Results) != 1 || res.Results[0].Result != "digest_mismatch" || res.Results[0].EventID == "" {
		t.Fatalf("verify of the corrupted shard: %v %+v", err, res)
	}
	<-e.exited
	flood.wait(t) // its calls fail once the agent is gone; only its exit matters
	eventID := res.Results[0].EventID
	if !res.Results[0].AuditDurable {
		t.Errorf("the mismatch's record %s was not reported durable", eventID)
	}
	spoolDir := filepath.Join(e.dir, "spool")
	if code, vout, verr := e.cli("audit", "verify", "--spool.dir", spoolDir, "--seal.secret-file", filepath.Join(e.dir, "seal.key")); code != 0 {
		t.Errorf("audit verify after SIGKILL: exit %d\n%s%s", code, vout, verr)
	}
	byName := spoolRecords(t, spoolDir)
	found := false
	for _, r := range byName[audit.NameSealVerificationFailed] {
		found = found || r.ID == eventID
	}
	if !found {
		t.Errorf("the mismatch's record %s is not in the spool after SIGKILL", eventID)
	}
	limited := byName[audit.NameControlRateLimited]
	if len(limited) == 0 || limited[0].Field("cause") != audit.CauseAPI || limited[0].Field("caller_uid") != int64(floodUID) {
		t.Errorf("no audited refusal of uid %d in the spool: %+v", floodUID, limited)
	}
	t.Logf("spool after SIGKILL: %d seal.verification_failed, %d control.rate_limited records (first refusals of bursts), for %d refusals",
		len(byName[audit.NameSealVerificationFailed]), len(limited), fr.Refused)
}

// spoolRecords reads every record of the spool in dir (the agent is gone),
// by event name.
func spoolRecords(t *testing.T, dir string) map[string][]spool.Record {
	t.Helper()
	sp, err := spool.Open(spool.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close(context.Background())
	out := map[string][]spool.Record{}
	rd := sp.NewReader(0)
	for {
		recs, err := rd.Read(1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			out[r.Name] = append(out[r.Name], r)
		}
	}
}

// newSharedEnv is newEnv in a folder other users can reach (the flood runs
// as another uid), removed at the end.
func newSharedEnv(t *testing.T) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "vramseal-load-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("VRAMSEAL_AGENT_BIN") // the one `make test` built
	if bin == "" {
		bin = agentBinary(t)
	}
	e := &env{t: t, bin: bin, dir: dir, models: filepath.Join(dir, "models"),
		socket: filepath.Join(dir, "run", "agent.sock"), config: filepath.Join(dir, "agent.yml"), log: &syncBuffer{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	ln.Close()
	if err := os.Mkdir(e.models, 0o755); err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte("0123456789abcdef"), 3)
	if err := os.WriteFile(filepath.Join(dir, "seal.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
}

// settled polls the agent's open descriptors and goroutines (go_goroutines)
// until two readings agree, or, with want, until both are at or below
// want's; it gives up after 20s and returns the last reading.
func (e *env) settled(pid int, want *[2]int) (fds, goroutines int) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	prev := [2]int{-1, -1}
	for {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			e.t.Fatal(err)
		}
		cur := [2]int{len(ents), int(e.metric("go_goroutines"))}
		done := cur == prev
		if want != nil {
			done = cur[0] <= want[0] && cur[1] <= want[1]
		}
		if done || time.Now().After(deadline) {
			return cur[0], cur[1]
		}
		prev = cur
		time.Sleep(500 * time.Millisecond)
	}
}
