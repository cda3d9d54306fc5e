package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/client"
)

func listCommand(app *kingpin.Application) (string, action) {
	cmd := app.Command("list", "List the sealed shards with their digest, size, GPU and last verification.")
	cf := addClientFlags(cmd)
	out := outputFlag(cmd)
	return cmd.FullCommand(), func(ctx context.Context, c cli) int {
		shards, err := cf.client().List(ctx)
		if err != nil {
			return clientExit(c, "list", err)
		}
		if *out == "json" {
			printJSON(c.stdout, client.ListResponse{Shards: shards})
			return exitOK
		}
		if len(shards) == 0 {
			fmt.Fprintln(c.stdout, "no shards sealed")
			return exitOK
		}
		now := time.Now()
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SHARD\tGPU\tBYTES\tORIGIN\tSTATE\tLEASES\tLAST RESULT\tLAST VERIFIED\tNEXT\tDIGEST")
		for _, s := range shards {
			res := s.LastResult
			if res == "" {
				res = "-"
			}
			next := "-"
			if !s.NextVerificationAt.IsZero() {
				next = since(s.NextVerificationAt, now)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.Seal.ShardID, s.Seal.GPUDevice, s.Seal.VRAMBytes,
				s.Origin, s.State, len(s.Leases), res, since(s.LastVerifiedAt, now), next, s.Seal.Digest)
		}
		_ = tw.Flush()
		return exitOK
	}
}
