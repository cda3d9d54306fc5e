package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/sealer"
)

func digestCommand(app *kingpin.Application) (string, action) {
	cmd := app.Command("digest", "Offline: print a file's content_sha256 and its sha256-tree-v1 seal digest (docs/digest.md).")
	file := cmd.Arg("file", "File to digest.").Required().String()
	leaf := cmd.Flag("leaf-size", "Leaf size in bytes: a power of two from 4096 to 16777216.").Default(fmt.Sprint(sealer.DefaultLeafSize)).Uint64()
	output := cmd.Flag("output", "Output format: text or json.").Short('o').Default("text").Enum("text", "json")
	return cmd.FullCommand(), func(ctx context.Context, c cli) int {
		if err := sealer.CheckLeafSize(*leaf); err != nil {
			fmt.Fprintf(c.stderr, "vramseal-agent digest: %v\n", err)
			return exitUsage
		}
		d, err := digestFile(*file, *leaf)
		if err != nil {
			fmt.Fprintf(c.stderr, "vramseal-agent digest: %v\n", err)
			return exitUsage
		}
		if *output == "json" {
			enc := json.NewEncoder(c.stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(map[string]any{
				"file": *file, "size": d.Size, "leaf_size": d.LeafSize,
				"content_sha256": d.ContentSHA256, "digest": d.Digest,
			})
			return exitOK
		}
		fmt.Fprintf(c.stdout, "file            %s\nsize            %d\nleaf_size       %d\ncontent_sha256  %s\ndigest          %s\n",
			*file, d.Size, d.LeafSize, d.ContentSHA256, d.Digest)
		return exitOK
	}
}

func digestFile(path string, leaf uint64) (sealer.Digests, error) {
	f, err := os.Open(path)
	if err != nil {
		return sealer.Digests{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return sealer.Digests{}, err
	}
	if !st.Mode().IsRegular() {
		return sealer.Digests{}, fmt.Errorf("%s is not a regular file", path)
	}
	d, err := sealer.DigestReader(f, leaf)
	if err != nil {
		return sealer.Digests{}, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}
