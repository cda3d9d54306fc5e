package main

import (
	"context"
	"fmt"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/audit"
)

func releaseCommand(app *kingpin.Application) (string, action) {
	cmd := app.Command("release", "Release a shard: free its GPU memory and forget its seal. A shard that consumers hold is refused unless --force.")
	cf := addClientFlags(cmd)
	id := cmd.Arg("id", "Shard id.").Required().String()
	force := cmd.Flag("force", "Release even while consumers hold the shard: their leases are revoked.").Bool()
	out := outputFlag(cmd)
	return cmd.FullCommand(), func(ctx context.Context, c cli) int {
		res, err := cf.client().Release(ctx, *id, *force)
		if err != nil {
			return clientExit(c, "release", err)
		}
		if *out == "json" {
			printJSON(c.stdout, res)
			return exitOK
		}
		fmt.Fprintf(c.stdout, "released %s: freed %d bytes on GPU %d (%d bytes still sealed there)\n",
			res.ShardID, res.FreedBytes, res.GPUDevice, res.RemainingUsed)
		if len(res.StillMappedBy) > 0 {
			fmt.Fprintf(c.stdout, "  leases revoked; these processes may still map the memory: pid %s\n", audit.PIDList(res.StillMappedBy))
		}
		return exitOK
	}
}
