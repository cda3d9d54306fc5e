package main

import (
	"context"
	"fmt"

	"github.com/alecthomas/kingpin/v2"
)

func init() {
	register(func(app *kingpin.Application) (string, action) {
		cmd := app.Command("release", "Release a shard: free its GPU memory and forget its seal.")
		cf := addClientFlags(cmd)
		id := cmd.Arg("id", "Shard id.").Required().String()
		out := outputFlag(cmd)
		return cmd.FullCommand(), func(ctx context.Context, c cli) int {
			res, err := cf.client().Release(ctx, *id)
			if err != nil {
				return clientExit(c, "release", err)
			}
			if *out == "json" {
				printJSON(c.stdout, res)
				return exitOK
			}
			fmt.Fprintf(c.stdout, "released %s: freed %d bytes on GPU %d (%d bytes still sealed there)\n",
				res.ShardID, res.FreedBytes, res.GPUDevice, res.RemainingUsed)
			return exitOK
		}
	})
}
