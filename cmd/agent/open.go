package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/sealer"
)

func openCommand(app *kingpin.Application) (string, action) {
	cmd := app.Command("open", "Open a shard on the consumer socket exactly as an inference engine does, check the seal it comes with, hash every byte through the mapping and print content_sha256; exit 0 only if it equals the seal's.")
	socket := cmd.Flag("handoff.socket", "Path of the agent's consumer socket (handoff.socket).").Default(client.DefaultConsumerSocket).String()
	timeout := cmd.Flag("timeout", "Give up on the agent after this long (0: never).").Default("10m").Duration()
	cudaLib := cmd.Flag("cuda.library", "The CUDA driver that imports a CUDA shard (libcuda.so.1, found by the loader, when empty).").Default("").String()
	id := cmd.Arg("id", "Shard id.").Required().String()
	out := outputFlag(cmd)
	return cmd.FullCommand(), func(ctx context.Context, c cli) int {
		if *timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *timeout)
			defer cancel()
		}
		res, err := openAndHash(ctx, *socket, *id, *cudaLib)
		if err != nil {
			return consumerExit(c, err)
		}
		if *out == "json" {
			printJSON(c.stdout, res)
		} else {
			fmt.Fprintf(c.stdout, "content_sha256 %s\n", res.ContentSHA256)
		}
		if !res.Match {
			fmt.Fprintf(c.stderr, "vramseal-agent open: the bytes handed over do not match the seal: content_sha256 %s, the seal says %s (seal verification: %s)\n",
				res.ContentSHA256, res.Seal.ContentSHA256, res.Verification)
			return exitFailed
		}
		return exitOK
	}
}

// openResult is what `open -o json` prints.
type openResult struct {
	ShardID       string      `json:"shard_id"`
	Size          uint64      `json:"size"`
	ContentSHA256 string      `json:"content_sha256"`
	Seal          sealer.Seal `json:"seal"`
	// Verification is the agent's verdict on the seal record received
	// (verify-before-use).
	Verification string        `json:"verification"`
	Match        bool          `json:"match"`
	Took         time.Duration `json:"took_ns"`
	// Memory is what the agent handed over (memfd, cuda_vmm); ReadOnly
	// whether the mapping is read-only (a CUDA driver may refuse it).
	Memory   string `json:"memory"`
	ReadOnly bool   `json:"read_only"`
}

// openAndHash opens id as a consumer, verifies the seal it received and
// hashes the shard through its own read-only mapping: mmap for a memfd,
// an import with the CUDA driver at cudaLib for a CUDA shard.
func openAndHash(ctx context.Context, socket, id, cudaLib string) (openResult, error) {
	start := time.Now()
	cons, err := client.DialConsumer(ctx, socket)
	if err != nil {
		return openResult{}, err
	}
	defer cons.Close()
	l, err := cons.Open(ctx, id)
	if err != nil {
		return openResult{}, err
	}
	defer l.Close(context.WithoutCancel(ctx))
	v, err := cons.VerifySeal(ctx, l.Seal)
	if err != nil {
		return openResult{}, err
	}
	got, readOnly, err := hashLease(ctx, l, cudaLib)
	if err != nil {
		return openResult{}, err
	}
	match := v.Intact() && subtle.ConstantTimeCompare([]byte(got), []byte(l.Seal.ContentSHA256)) == 1
	return openResult{ShardID: id, Size: l.Size, ContentSHA256: got, Seal: l.Seal, Verification: v.Result, Match: match,
		Took: time.Since(start), Memory: l.Memory, ReadOnly: readOnly}, nil
}

// hashLease hashes a leased shard's bytes through this process's own
// mapping of them, and says whether that mapping is read-only.
func hashLease(ctx context.Context, l *client.Lease, cudaLib string) (string, bool, error) {
	h := sha256.New()
	if l.Memory != sealer.MemoryCUDAVMM {
		m, err := l.Map()
		if err != nil {
			return "", false, err
		}
		defer client.Unmap(m)
		h.Write(m)
		return hex.EncodeToString(h.Sum(nil)), true, nil
	}
	drv, err := client.OpenCUDA(cudaLib)
	if err != nil {
		return "", false, err
	}
	m, err := drv.Import(ctx, l)
	if err != nil {
		return "", false, err
	}
	defer m.Close()
	buf := make([]byte, min(m.Size, 64<<20))
	for off := uint64(0); off < m.Size; {
		if err := ctx.Err(); err != nil {
			return "", false, err
		}
		n := min(uint64(len(buf)), m.Size-off)
		if _, err := m.ReadAt(buf[:n], int64(off)); err != nil {
			return "", false, err
		}
		h.Write(buf[:n])
		off += n
	}
	return hex.EncodeToString(h.Sum(nil)), m.ReadOnly, nil
}

// consumerExit prints a consumer-socket error and returns its exit status:
// 4 unreachable, 2 unknown shard or bad input, 1 refused or failed.
func consumerExit(c cli, err error) int {
	fmt.Fprintf(c.stderr, "vramseal-agent open: %v\n", err)
	if errors.Is(err, client.ErrUnreachable) {
		fmt.Fprintf(c.stderr, "  (is the agent running with handoff.socket set? pass --handoff.socket)\n")
		return exitUnreachable
	}
	var ae *client.APIError
	if errors.As(err, &ae) && (ae.Kind == sealer.KindNotFound.String() || ae.Kind == sealer.KindInvalid.String()) {
		return exitUsage
	}
	return exitFailed
}
