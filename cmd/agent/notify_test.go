package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// fakeSystemd is the receiving end of $NOTIFY_SOCKET: the datagrams the
// agent sends, as systemd would read them.
type fakeSystemd struct {
	t       *testing.T
	conn    *net.UnixConn
	seen    []string // every datagram
	pending []string // lines not yet looked at by expect
}

func newFakeSystemd(t *testing.T, name string) *fakeSystemd {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeSystemd{t: t, conn: conn}
}

// expect consumes lines (reading datagrams as needed) until one is want (or
// starts with it, when want ends with '='), and returns that line.
func (s *fakeSystemd) expect(want string) string {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	buf := make([]byte, 4096)
	for {
		for len(s.pending) > 0 {
			line := s.pending[0]
			s.pending = s.pending[1:]
			if line == want || (strings.HasSuffix(want, "=") && strings.HasPrefix(line, want)) {
				return line
			}
		}
		if err := s.conn.SetReadDeadline(deadline); err != nil {
			s.t.Fatal(err)
		}
		n, err := s.conn.Read(buf)
		if err != nil {
			s.t.Fatalf("waiting for %q: %v; received so far:\n%s", want, err, strings.Join(s.seen, "\n--\n"))
		}
		msg := string(buf[:n])
		s.seen = append(s.seen, msg)
		s.pending = append(s.pending, strings.Split(msg, "\n")...)
	}
}

// TestSystemdNotify runs the agent under a fake systemd: READY=1 as soon as
// it serves although a declared shard can never be sealed (that goes into
// STATUS=), WATCHDOG=1 at half of $WATCHDOG_USEC, RELOADING=1 then READY=1
// on SIGHUP, STOPPING=1 on SIGTERM. The socket has an abstract name ('@'),
// as systemd's may.
func TestSystemdNotify(t *testing.T) {
	name := fmt.Sprintf("@vramseal-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	sd := newFakeSystemd(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	t.Setenv("WATCHDOG_USEC", "400000") // a WATCHDOG=1 every 200ms
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")

	e := newEnv(t)
	e.shardFile("a.bin", 1<<16, 1)
	e.writeConfig("sim", "sealed-one:a.bin:0", "never-sealed:missing.bin:0")
	e.start()

	sd.expect("READY=1")
	start := time.Now()
	if code, _ := e.get("/healthz"); code != 200 {
		t.Fatalf("READY=1 before the web server answers: /healthz %d", code)
	}
	for {
		st := sd.expect("STATUS=")
		if strings.Contains(st, "not ready") && strings.Contains(st, "never-sealed") && !strings.Contains(st, "sealed-one") {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("no STATUS= naming only the shard that cannot be sealed; last %q", st)
		}
	}
	sd.expect("WATCHDOG=1")
	t0 := time.Now()
	sd.expect("WATCHDOG=1")
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("WATCHDOG=1 %s apart, want about 200ms (half of WATCHDOG_USEC)", d)
	}

	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	sd.expect("RELOADING=1")
	sd.expect("READY=1")
	mono := false
	for _, m := range sd.seen {
		if strings.Contains(m, "RELOADING=1\nMONOTONIC_USEC=") {
			mono = true
		}
	}
	if !mono {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC=: %q", sd.seen)
	}

	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sd.expect("STOPPING=1")
	if code := e.wait(60 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
}

// TestNotifierOffWithoutSystemd: with no $NOTIFY_SOCKET nothing is sent
// and run returns at once (no probe of the web port).
func TestNotifierOffWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	log := logrus.New()
	log.SetOutput(io.Discard)
	n := newNotifier(log)
	sent := 0
	n.send = func(string) (bool, error) { sent++; return true, nil }
	n.ready()
	n.stopping()
	n.run(t.Context(), func(context.Context) error { return nil }, func() string { return "" })
	if sent != 0 {
		t.Fatalf("%d messages sent without $NOTIFY_SOCKET", sent)
	}
}
