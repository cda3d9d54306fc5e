package main

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
	"github.com/vramseal/vramseal/internal/logfield"
	"golang.org/x/sys/unix"
)

// The systemd notification protocol (sd_notify, for Type=notify): a
// datagram to $NOTIFY_SOCKET (a path, or an abstract name written with a
// leading '@') per state change. Not under systemd ($NOTIFY_SOCKET unset)
// every call does nothing.
//
//   - READY=1 once the agent serves: its sockets are bound. Declared shards
//     do not hold it back: their readiness goes into STATUS= lines (what
//     /readyz says), so a shard that never seals is a visible status, not a
//     start-up timeout and a restart loop.
//   - RELOADING=1 (with MONOTONIC_USEC) before a reload, READY=1 after it.
//   - STOPPING=1 when the shutdown begins.
//   - WATCHDOG=1 every half of $WATCHDOG_USEC (systemd's WatchdogSec), each
//     time after the agent answered a readiness check, so an agent whose
//     shard bookkeeping hangs is restarted by systemd.

// notifyStatusEvery is how often the status line is checked for a change.
const notifyStatusEvery = time.Second

// notifier sends the agent's state to systemd. Its methods are safe for
// concurrent use and never fail the caller: a failed send is logged.
type notifier struct {
	log      logrus.FieldLogger
	enabled  bool // $NOTIFY_SOCKET is set
	send     func(state string) (bool, error)
	watchdog time.Duration // systemd's watchdog timeout; 0: off
	warned   atomic.Bool
}

// newNotifier reads $NOTIFY_SOCKET and $WATCHDOG_USEC (with
// $WATCHDOG_PID, when set, naming this process).
func newNotifier(log logrus.FieldLogger) *notifier {
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.WithError(err).Warn("ignoring systemd's watchdog setting")
	}
	return &notifier{log: log, enabled: os.Getenv("NOTIFY_SOCKET") != "", send: func(s string) (bool, error) { return daemon.SdNotify(false, s) }, watchdog: wd}
}

// notify sends one message; the first failure is a warning, later ones
// are logged at debug level (the watchdog would repeat it every few seconds).
func (n *notifier) notify(state string) {
	if !n.enabled {
		return
	}
	if _, err := n.send(state); err != nil {
		l := n.log.WithError(err).WithField(logfield.Component, "systemd")
		if n.warned.CompareAndSwap(false, true) {
			l.Warn("cannot notify systemd ($NOTIFY_SOCKET)")
		} else {
			l.Debug("cannot notify systemd ($NOTIFY_SOCKET)")
		}
	}
}

// reloading says a reload begins; ready must follow when it is done.
func (n *notifier) reloading() {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	n.notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1e3, 10))
}

func (n *notifier) ready()    { n.notify("READY=1") }
func (n *notifier) stopping() { n.notify("STOPPING=1\nSTATUS=shutting down: releasing every shard") }

// run sends READY=1 once serving returns nil, then, until ctx ends, a
// STATUS= line whenever status changes and WATCHDOG=1 at half the watchdog
// interval (each after a fresh status, which takes the agent's locks).
func (n *notifier) run(ctx context.Context, serving func(context.Context) error, status func() string) {
	if !n.enabled {
		return
	}
	if err := serving(ctx); err != nil {
		return
	}
	last := status()
	n.notify("READY=1\nSTATUS=" + last)
	tick := time.NewTicker(notifyStatusEvery)
	defer tick.Stop()
	var wd <-chan time.Time
	if n.watchdog > 0 {
		t := time.NewTicker(n.watchdog / 2)
		defer t.Stop()
		wd = t.C
		n.notify("WATCHDOG=1")
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if s := status(); s != last {
				last = s
				n.notify("STATUS=" + s)
			}
		case <-wd:
			_ = status()
			n.notify("WATCHDOG=1")
		}
	}
}

// notifyStatus is the STATUS= line: the agent serves, and whether every
// declared shard is sealed (as /readyz says).
func (a *agent) notifyStatus() string {
	ok, _, why := a.ready()
	if ok {
		return "serving; ready: every declared shard is sealed"
	}
	// One line: a newline would start another assignment in the message.
	return "serving; not ready: " + strings.ReplaceAll(why, "\n", " ")
}

// listeningWait bounds the wait for the web server's port: past it the
// agent says READY=1 anyway (a failed bind stops the agent by itself).
const listeningWait = 30 * time.Second

// listening returns once every address accepts a TCP connection (the web
// server's goroutine has bound it), or with ctx's error. With systemd's
// socket (--web.systemd-socket) the port is bound before the agent starts;
// a port 0 (chosen by the kernel) cannot be probed.
func listening(systemdSocket bool, addrs []string) func(context.Context) error {
	return func(ctx context.Context) error {
		if systemdSocket {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, listeningWait)
		defer cancel()
		d := net.Dialer{Timeout: time.Second}
		for _, addr := range addrs {
			if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
				continue
			}
			for {
				c, err := d.DialContext(wctx, "tcp", addr)
				if err == nil {
					c.Close()
					break
				}
				select {
				case <-wctx.Done():
					return ctx.Err() // nil when only the wait ran out
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		return nil
	}
}
