// Command vramseal-agent loads model shards into GPU memory, seals them,
// re-verifies them on a schedule and reports every step as an audit event.
//
// This file only wires: each subcommand lives in its own file and registers
// itself with register.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/version"
	"github.com/vramseal/vramseal/policy"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// Exit statuses (README.md, "Control API and CLI").
const (
	exitOK          = 0
	exitFailed      = 1               // operation failed or refused
	exitUsage       = 2               // bad usage or bad input
	exitPolicy      = policy.ExitCode // policy violation with exit_on_violation
	exitUnreachable = 4               // agent unreachable
)

// cli is what every subcommand gets: its output streams.
type cli struct {
	stdout io.Writer
	stderr io.Writer
}

// action runs a parsed subcommand and returns its exit status.
type action func(ctx context.Context, c cli) int

// command adds one subcommand to the application and returns its full name
// and what runs it.
type command func(app *kingpin.Application) (name string, run action)

// commands lists every subcommand, in the order --help shows them.
func commands() []command {
	cmds := []command{
		runCommand, sealCommand, listCommand, verifyCommand, statusCommand, releaseCommand,
		openCommand, digestCommand, auditVerifyCommand, auditShowCommand, versionCommand,
	}
	return append(cmds, debugCommands()...)
}

func main() {
	if cuda.IsReader() { // a reader process of attached CUDA memory (sealer/cuda)
		os.Exit(cuda.ServeReader())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runCLI(ctx, os.Args[1:], cli{stdout: os.Stdout, stderr: os.Stderr})
	stop()
	os.Exit(code)
}

// runCLI parses args and runs the chosen subcommand.
func runCLI(ctx context.Context, args []string, c cli) int {
	app := kingpin.New("vramseal-agent", "Seal model shards in GPU memory, re-verify them, and audit every step.")
	app.Version(version.Print("vramseal-agent"))
	app.HelpFlag.Short('h')
	app.UsageWriter(c.stdout)
	app.ErrorWriter(c.stderr)
	exited := -1
	app.Terminate(func(code int) {
		if exited < 0 {
			exited = code
		}
	})
	actions := map[string]action{}
	for _, add := range commands() {
		name, run := add(app)
		actions[name] = run
	}
	cmd, err := app.Parse(args)
	if exited >= 0 { // --help or --version
		return exited
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "vramseal-agent: %v (try --help)\n", err)
		return exitUsage
	}
	run, ok := actions[cmd]
	if !ok {
		fmt.Fprintf(c.stderr, "vramseal-agent: no command %q\n", cmd)
		return exitUsage
	}
	return run(ctx, c)
}
