package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/sealer"
)

func verifyCommand(app *kingpin.Application) (string, action) {
	cmd := app.Command("verify", "Verify shards now: one by id, --all, or --seal FILE (a seal record as JSON, verify-before-use). Exit status 0 only if every verified shard is intact.")
	cf := addClientFlags(cmd)
	id := cmd.Arg("id", "Shard id.").String()
	all := cmd.Flag("all", "Verify every sealed shard.").Bool()
	sealFile := cmd.Flag("seal", "Verify the seal record in FILE ('-' for standard input), as `seal -o json` printed it.").PlaceHolder("FILE").String()
	out := outputFlag(cmd)
	return cmd.FullCommand(), func(ctx context.Context, c cli) int {
		n := 0
		for _, set := range []bool{*id != "", *all, *sealFile != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			fmt.Fprintln(c.stderr, "vramseal-agent verify: give exactly one of ID, --all or --seal FILE")
			return exitUsage
		}
		cl := cf.client()
		var (
			resp client.VerifyResponse
			err  error
		)
		switch {
		case *all:
			resp, err = cl.VerifyAll(ctx)
		case *sealFile != "":
			record, rerr := readSealFile(*sealFile)
			if rerr != nil {
				fmt.Fprintf(c.stderr, "vramseal-agent verify: %v\n", rerr)
				return exitUsage
			}
			resp, err = cl.VerifySeal(ctx, record)
		default:
			resp, err = cl.Verify(ctx, *id)
		}
		if err != nil {
			return clientExit(c, "verify", err)
		}
		if *out == "json" {
			printJSON(c.stdout, resp)
		} else {
			printResults(c.stdout, resp)
		}
		if !resp.Intact {
			return exitFailed
		}
		return exitOK
	}
}

func readSealFile(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, client.MaxBodyBytes+1))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, client.MaxBodyBytes+1))
}

func printResults(w io.Writer, resp client.VerifyResponse) {
	if len(resp.Results) == 0 {
		fmt.Fprintln(w, "no shards sealed: nothing to verify")
		return
	}
	bad := 0
	for _, r := range resp.Results {
		if r.Intact() {
			fmt.Fprintf(w, "%s: ok (GPU %d, %d bytes in %s)\n", r.ShardID, r.GPUDevice, r.Bytes, r.Duration)
			continue
		}
		bad++
		fmt.Fprintf(w, "%s: FAILED: %s\n", r.ShardID, describeFailure(r))
		if r.ExpectedDigest != "" {
			fmt.Fprintf(w, "  expected  %s\n", r.ExpectedDigest)
		}
		if r.ActualDigest != "" {
			fmt.Fprintf(w, "  actual    %s\n", r.ActualDigest)
		}
		if r.EventID != "" {
			fmt.Fprintf(w, "  audit event %s (durable: %v)\n", r.EventID, r.AuditDurable)
		}
	}
	if bad > 0 {
		fmt.Fprintf(w, "%d of %d shard(s) failed verification\n", bad, len(resp.Results))
	}
}

func describeFailure(r sealer.VerifyResult) string {
	switch r.Result {
	case "digest_mismatch":
		return fmt.Sprintf("digest_mismatch: VRAM differs from the seal in %d chunk(s), the first at offset %d", r.BadChunks, r.FirstBadOffset)
	case "signature_invalid":
		return "signature_invalid: the seal record's signature or fields do not match"
	case "allocation_missing":
		return "allocation_missing: the shard's GPU memory is gone"
	case "read_error":
		return "read_error: reading the shard back from the GPU failed"
	case sealer.ResultCancelled:
		return "cancelled: the shard was released during verification"
	}
	return r.Result
}
