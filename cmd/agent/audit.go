package main

import (
	"context"
	"fmt"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/audit/spool"
	"github.com/vramseal/vramseal/internal/secret"
)

// defaultSpoolDir is the config file's default audit.spool_dir.
const defaultSpoolDir = "/var/lib/vramseal/audit"

func init() {
	register(func(app *kingpin.Application) (string, action) {
		cmd := app.Command("audit", "Audit spool tools.").Command("verify",
			"Offline: check the local audit spool's framing, sequence and hash chain (and the checkpoint HMACs with --seal.secret-file). Exit 0 when intact, 1 with the place of the first break otherwise.")
		dir := cmd.Flag("spool.dir", "Audit spool folder (the config file's audit.spool_dir).").Default(defaultSpoolDir).String()
		secretFile := cmd.Flag("seal.secret-file", "Seal secret file: also check every checkpoint's HMAC.").String()
		return cmd.FullCommand(), func(_ context.Context, c cli) int {
			return auditVerify(c, *dir, *secretFile)
		}
	})
}

func auditVerify(c cli, dir, secretFile string) int {
	var key []byte
	if secretFile != "" {
		s, err := secret.Load(secretFile)
		if err != nil {
			fmt.Fprintf(c.stderr, "vramseal-agent audit verify: %v\n", err)
			return exitUsage
		}
		if key, err = s.Key(secret.LabelAuditCheckpoint); err != nil {
			fmt.Fprintf(c.stderr, "vramseal-agent audit verify: %v\n", err)
			return exitUsage
		}
	}
	rep, err := spool.Verify(dir, key)
	if err != nil {
		fmt.Fprintf(c.stderr, "vramseal-agent audit verify: %v\n", err)
		return exitUsage
	}
	macs := "checkpoint HMACs not checked (no --seal.secret-file)"
	if rep.CheckpointsChecked {
		macs = "checkpoint HMACs checked"
	}
	fmt.Fprintf(c.stdout, "spool      %s\nsegments   %d\nrecords    %d (seq %d..%d)\ncheckpoints %d, %s\n",
		dir, rep.Segments, rep.Records, rep.FirstSeq, rep.LastSeq, rep.Checkpoints, macs)
	fmt.Fprintf(c.stdout, "anchor     shipped %d, last checkpoint %d\n", rep.Anchor.ShippedSeq, rep.Anchor.CheckpointSeq)
	if rep.Tail > 0 {
		fmt.Fprintf(c.stdout, "tail       %d records after the anchor (seq %d..%d) are not vouched for: a cut among them cannot be seen\n", rep.Tail, rep.LastSeq-rep.Tail+1, rep.LastSeq)
	}
	if rep.Losses > 0 {
		fmt.Fprintf(c.stdout, "lost       %d events, as recorded by loss records\n", rep.Losses)
	}
	for _, r := range rep.Repairs {
		fmt.Fprintf(c.stdout, "repair     %s\n", r)
	}
	for _, q := range rep.Quarantined {
		fmt.Fprintf(c.stdout, "quarantined %s\n", q)
	}
	for _, b := range rep.Breaks {
		fmt.Fprintf(c.stdout, "break      %s (recorded by a repair record)\n", b)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			fmt.Fprintf(c.stdout, "BROKEN     %s\n", p)
		}
		fmt.Fprintf(c.stdout, "result     BROKEN: %d problem(s); the first is at %s offset %d (seq %d)\n",
			len(rep.Problems), rep.Problems[0].File, rep.Problems[0].Offset, rep.Problems[0].Seq)
		return exitFailed
	}
	fmt.Fprintln(c.stdout, "result     intact")
	return exitOK
}
