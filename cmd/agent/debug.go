package main

import (
	"context"
	"fmt"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/client"
)

// debugCommand returns the "debug" command, creating it on first use.
func debugCommand(app *kingpin.Application) *kingpin.CmdClause {
	if cmd := app.GetCommand("debug"); cmd != nil {
		return cmd
	}
	return app.Command("debug", "Simulated GPU only: fault switches for demos and tests (refused on real GPUs).")
}

// debugSwitch is the command "debug NAME": build parses the arguments into
// the request sent to /v1/debug/NAME; done prints the outcome.
func debugSwitch(name, help string, build func(cmd *kingpin.CmdClause) func() any, done func(c cli)) command {
	return func(app *kingpin.Application) (string, action) {
		cmd := debugCommand(app).Command(name, help)
		cf := addClientFlags(cmd)
		req := build(cmd)
		return cmd.FullCommand(), func(ctx context.Context, c cli) int {
			if _, err := cf.client().Debug(ctx, name, req()); err != nil {
				return clientExit(c, "debug "+name, err)
			}
			done(c)
			return exitOK
		}
	}
}

// debugCommands are the debug subcommands (the simulated GPU's switches).
func debugCommands() []command {
	var (
		id       string
		offset   uint64
		bit      uint
		eccGPU   int
		lostGPU  int
		backGPU  int
		failGPU  int
		corr     uint64
		uncorr   uint64
		failMode string
	)
	corrupt := debugSwitch("corrupt", "Flip one bit of a sealed shard in simulated VRAM.", func(cmd *kingpin.CmdClause) func() any {
		cmd.Arg("id", "Shard id.").Required().StringVar(&id)
		cmd.Flag("offset", "Byte offset in the shard.").Required().Uint64Var(&offset)
		cmd.Flag("bit", "Bit of that byte to flip (0-7).").Default("0").UintVar(&bit)
		return func() any { return client.CorruptRequest{ID: id, Offset: offset, Bit: bit} }
	}, func(c cli) {
		fmt.Fprintf(c.stdout, "flipped bit %d of byte %d of %s in simulated VRAM\n", bit, offset, id)
	})

	ecc := debugSwitch("ecc", "Add ECC error counts to a simulated GPU.", func(cmd *kingpin.CmdClause) func() any {
		cmd.Arg("gpu", "GPU index.").Required().IntVar(&eccGPU)
		cmd.Flag("uncorrectable", "Uncorrectable errors to add.").Default("0").Uint64Var(&uncorr)
		cmd.Flag("correctable", "Correctable errors to add.").Default("0").Uint64Var(&corr)
		return func() any { return client.ECCRequest{GPU: eccGPU, Correctable: corr, Uncorrectable: uncorr} }
	}, func(c cli) {
		fmt.Fprintf(c.stdout, "added %d correctable and %d uncorrectable ECC errors to GPU %d\n", corr, uncorr, eccGPU)
	})

	lost := debugSwitch("gpu-lost", "Make a simulated GPU disappear (every call to it fails).", func(cmd *kingpin.CmdClause) func() any {
		cmd.Arg("gpu", "GPU index.").Required().IntVar(&lostGPU)
		return func() any { return client.GPURequest{GPU: lostGPU} }
	}, func(c cli) { fmt.Fprintf(c.stdout, "GPU %d is lost\n", lostGPU) })

	restored := debugSwitch("gpu-restored", "Bring a lost simulated GPU back (its memory is empty, as after a reset).", func(cmd *kingpin.CmdClause) func() any {
		cmd.Arg("gpu", "GPU index.").Required().IntVar(&backGPU)
		return func() any { return client.GPURequest{GPU: backGPU} }
	}, func(c cli) { fmt.Fprintf(c.stdout, "GPU %d is back\n", backGPU) })

	failReads := debugSwitch("fail-reads", "Make every read of a simulated GPU fail, or not.", func(cmd *kingpin.CmdClause) func() any {
		cmd.Arg("gpu", "GPU index.").Required().IntVar(&failGPU)
		cmd.Arg("mode", "on or off.").Required().EnumVar(&failMode, "on", "off")
		return func() any { return client.FailReadsRequest{GPU: failGPU, On: failMode == "on"} }
	}, func(c cli) { fmt.Fprintf(c.stdout, "GPU %d reads fail: %s\n", failGPU, failMode) })

	return []command{corrupt, ecc, lost, restored, failReads}
}
