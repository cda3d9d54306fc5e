package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/client"
)

// clientFlags are the flags every client subcommand has.
type clientFlags struct {
	socket  string
	timeout time.Duration
}

func addClientFlags(cmd *kingpin.CmdClause) *clientFlags {
	f := &clientFlags{}
	cmd.Flag("control.socket", "Path of the running agent's control socket.").Default(defaultSocket).StringVar(&f.socket)
	cmd.Flag("timeout", "Give up on the agent after this long (0: never).").Default("10m").DurationVar(&f.timeout)
	return f
}

// client returns a control API client. The W3C trace context of the
// caller, when given in $TRACEPARENT, is sent along so the agent's audit
// records join the caller's trace.
func (f *clientFlags) client() *client.Control {
	c := client.NewControl(f.socket, f.timeout)
	c.TraceParent = os.Getenv("TRACEPARENT")
	return c
}

// clientExit prints err for subcommand name and returns its exit status:
// 4 when the agent cannot be reached, 2 for bad input or an unknown shard,
// 1 for any other failure or refusal.
func clientExit(c cli, name string, err error) int {
	fmt.Fprintf(c.stderr, "vramseal-agent %s: %v\n", name, err)
	if errors.Is(err, client.ErrUnreachable) {
		fmt.Fprintf(c.stderr, "  (is the agent running? start it with `vramseal-agent run`, or pass --control.socket)\n")
		return exitUnreachable
	}
	var ae *client.APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge:
			return exitUsage
		}
	}
	return exitFailed
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func outputFlag(cmd *kingpin.CmdClause) *string {
	return cmd.Flag("output", "Output format: text or json.").Short('o').Default("text").Enum("text", "json")
}

// since renders a timestamp for humans.
func since(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + (-d).Round(time.Second).String()
	}
	return d.Round(time.Second).String() + " ago"
}
