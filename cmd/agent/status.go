package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/client"
)

func statusCommand(app *kingpin.Application) (string, action) {
	cmd := app.Command("status", "Show the running agent's status; with --wait, wait until it is ready.")
	cf := addClientFlags(cmd)
	wait := cmd.Flag("wait", "Wait up to this long for the agent to be reachable and ready (exit 1 if it is not).").Default("0s").Duration()
	out := outputFlag(cmd)
	return cmd.FullCommand(), func(ctx context.Context, c cli) int {
		cl := cf.client()
		deadline := time.Now().Add(*wait)
		var (
			st  client.Status
			err error
		)
		for {
			st, err = cl.Status(ctx)
			if (err == nil && st.Ready) || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			if err != nil && !errors.Is(err, client.ErrUnreachable) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return clientExit(c, "status", err)
		}
		if *out == "json" {
			printJSON(c.stdout, st)
		} else {
			dev := st.Device
			if st.Simulated {
				dev += " (SIMULATED GPUs)"
			}
			ready := "yes"
			if !st.Ready {
				ready = "no: " + st.NotReady
			}
			fmt.Fprintf(c.stdout, "worker   %s\ndevice   %s\ngpus     %v\nshards   %d\nready    %s\nverify   every %s (%s)\n",
				st.WorkerID, dev, st.GPUs, st.Shards, ready, st.VerifyEvery, st.VerifyMode)
			for _, id := range st.Pending {
				if why, ok := st.PendingReasons[id]; ok {
					fmt.Fprintf(c.stdout, "pending  %s: %s\n", id, why)
				}
			}
		}
		if *wait > 0 && !st.Ready {
			return exitFailed
		}
		return exitOK
	}
}
