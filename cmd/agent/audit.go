package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/alecthomas/kingpin/v2"

	auditotel "github.com/vramseal/vramseal/audit/otel"
	"github.com/vramseal/vramseal/audit/spool"
	"github.com/vramseal/vramseal/internal/secret"
)

// defaultSpoolDir is the config file's default audit.spool_dir.
const defaultSpoolDir = "/var/lib/vramseal/audit"

// auditCommand returns the "audit" command, made once for its
// subcommands.
func auditCommand(app *kingpin.Application) *kingpin.CmdClause {
	if c := app.GetCommand("audit"); c != nil {
		return c
	}
	return app.Command("audit", "Audit spool tools (offline).")
}

func auditVerifyCommand(app *kingpin.Application) (string, action) {
	cmd := auditCommand(app).Command("verify",
		"Offline: check the local audit spool's framing, sequence, hash chain and anchor (and the checkpoint HMACs with --seal.secret-file); with --collector-file, the copy the OpenTelemetry Collector's file exporter wrote, and with --spool.dir as well the two copies against each other. Exit 0 when intact, 1 naming each break otherwise.")
	var a auditVerifyArgs
	cmd.Flag("spool.dir", "Audit spool folder (the config file's audit.spool_dir).").Default(defaultSpoolDir).IsSetByUser(&a.spoolSet).StringVar(&a.dir)
	cmd.Flag("seal.secret-file", "Seal secret file: also check every checkpoint's HMAC. Repeatable (after a rotation give the old secrets too): a checkpoint verifies when one of them does.").StringsVar(&a.secretFiles)
	cmd.Flag("collector-file", "A file the Collector's file exporter wrote (OTLP JSON lines, or its zstd-compressed form). Repeatable: give every rotated file.").StringsVar(&a.copyFiles)
	return cmd.FullCommand(), func(_ context.Context, c cli) int {
		return auditVerify(c, a)
	}
}

type auditVerifyArgs struct {
	dir         string
	spoolSet    bool
	secretFiles []string
	copyFiles   []string
}

// checkpointKeys loads each seal secret file and derives its checkpoint
// key.
func checkpointKeys(files []string) ([][]byte, error) {
	var keys [][]byte
	for _, f := range files {
		s, err := secret.Load(f)
		if err != nil {
			return nil, err
		}
		k, err := s.Key(secret.LabelAuditCheckpoint)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func auditVerify(c cli, a auditVerifyArgs) int {
	keys, err := checkpointKeys(a.secretFiles)
	if err != nil {
		fmt.Fprintf(c.stderr, "vramseal-agent audit verify: %v\n", err)
		return exitUsage
	}
	code := exitOK
	if len(a.copyFiles) == 0 || a.spoolSet {
		switch sc := verifySpool(c, a.dir, keys); sc {
		case exitUsage:
			return sc
		case exitFailed:
			code = exitFailed
		}
	}
	if len(a.copyFiles) > 0 {
		switch cc := verifyCopy(c, a, keys); cc {
		case exitUsage:
			return cc
		case exitFailed:
			code = exitFailed
		}
	}
	return code
}

func verifySpool(c cli, dir string, keys [][]byte) int {
	rep, err := spool.VerifyKeys(dir, keys)
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

// readCopyFiles reads every collector file given.
func readCopyFiles(files []string) ([]auditotel.CopyRecord, error) {
	var all []auditotel.CopyRecord
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		recs, err := auditotel.ReadCopy(f, name)
		f.Close()
		if err != nil {
			return nil, err
		}
		all = append(all, recs...)
	}
	return all, nil
}

func verifyCopy(c cli, a auditVerifyArgs, keys [][]byte) int {
	recs, err := readCopyFiles(a.copyFiles)
	if err != nil {
		fmt.Fprintf(c.stderr, "vramseal-agent audit verify: collector file: %v\n", err)
		return exitUsage
	}
	rep := auditotel.VerifyCopy(recs, keys)
	if a.spoolSet {
		var srecs []spool.Record
		if err := spool.ReadDir(a.dir, func(r spool.Record) error { srecs = append(srecs, r); return nil }); err != nil {
			fmt.Fprintf(c.stdout, "note       the spool is read up to its breaks (above): %v\n", err)
		}
		anchor, err := spool.ReadAnchor(a.dir)
		if err != nil {
			fmt.Fprintf(c.stdout, "note       %v: every record of the spool is expected in the copy\n", err)
			anchor.ShippedSeq = ^uint64(0)
		}
		rep.CompareSpool(srecs, anchor.ShippedSeq)
	}
	printCopyReport(c.stdout, len(recs), rep)
	if !rep.OK() {
		return exitFailed
	}
	return exitOK
}

func printCopyReport(w io.Writer, n int, rep auditotel.CopyReport) {
	macs := "checkpoint HMACs not checked (no --seal.secret-file)"
	if rep.CheckpointsChecked {
		macs = "checkpoint HMACs checked"
	}
	fmt.Fprintf(w, "collector  %d log records, %s\n", n, macs)
	for _, wc := range rep.Workers {
		fmt.Fprintf(w, "worker     %s: %d records (seq %d..%d), %d checkpoints, %d records after the last checkpoint\n",
			wc.Worker, wc.Records, wc.FirstSeq, wc.LastSeq, wc.Checkpoints, wc.Tail)
	}
	for _, d := range rep.Duplicates {
		fmt.Fprintf(w, "duplicate  %s (the same record; de-duplicated by log.record.uid)\n", d)
	}
	for _, s := range rep.Compared {
		fmt.Fprintf(w, "compared   %s\n", s)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			fmt.Fprintf(w, "BROKEN     %s\n", p)
		}
		fmt.Fprintf(w, "result     BROKEN: %d problem(s) in the collector's copy\n", len(rep.Problems))
		return
	}
	fmt.Fprintln(w, "result     the collector's copy is intact")
}
