package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/client"
)

func sealCommand(app *kingpin.Application) (string, action) {
	cmd := app.Command("seal", "Ask the running agent to seal a file (it must lie under the agent's model_dirs).")
	cf := addClientFlags(cmd)
	file := cmd.Arg("file", "File to seal.").Required().String()
	id := cmd.Flag("id", "Shard id: 1-256 characters of [A-Za-z0-9._-].").Required().String()
	gpu := cmd.Flag("gpu", "GPU index.").Default("0").Int()
	sha := cmd.Flag("sha256", "Expected plain SHA-256 of the file (hex); the seal is refused if it differs.").String()
	ref := cmd.Flag("model-ref", "Free-form reference to the model (recorded in the seal).").String()
	leaf := cmd.Flag("leaf-size", "Leaf size in bytes (a power of two from 4096 to 16777216); the agent's default when 0.").Default("0").Uint64()
	out := outputFlag(cmd)
	return cmd.FullCommand(), func(ctx context.Context, c cli) int {
		path, err := filepath.Abs(*file)
		if err != nil {
			fmt.Fprintf(c.stderr, "vramseal-agent seal: %v\n", err)
			return exitUsage
		}
		seal, err := cf.client().Seal(ctx, client.SealRequest{ID: *id, Path: path, GPU: *gpu, SHA256: *sha, ModelRef: *ref, LeafSize: *leaf})
		if err != nil {
			return clientExit(c, "seal", err)
		}
		if *out == "json" {
			printJSON(c.stdout, seal)
			return exitOK
		}
		fmt.Fprintf(c.stdout, "sealed %s on GPU %d: %d bytes\n  digest          %s\n  content_sha256  %s\n  leaf_size       %d\n  sealed_at       %s\n  worker_id       %s\n",
			seal.ShardID, seal.GPUDevice, seal.VRAMBytes, seal.Digest, seal.ContentSHA256, seal.LeafSize,
			seal.SealedAt.Format("2006-01-02T15:04:05.000000Z07:00"), seal.WorkerID)
		if seal.ModelRef != "" {
			fmt.Fprintf(c.stdout, "  model_ref       %s\n", seal.ModelRef)
		}
		return exitOK
	}
}
