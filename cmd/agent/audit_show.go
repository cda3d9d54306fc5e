package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/vramseal/vramseal/audit"
	auditotel "github.com/vramseal/vramseal/audit/otel"
	"github.com/vramseal/vramseal/audit/spool"
)

func auditShowCommand(app *kingpin.Application) (string, action) {
	cmd := auditCommand(app).Command("show", "Offline: print the local audit spool's records, one a line, with sequence numbers and hashes; -o json writes each as it is shipped.")
	var a auditShowArgs
	cmd.Flag("spool.dir", "Audit spool folder (the config file's audit.spool_dir).").Default(defaultSpoolDir).StringVar(&a.dir)
	cmd.Flag("event", "Only this event (e.g. seal.verification_failed, with or without the vramseal. prefix).").StringVar(&a.event)
	cmd.Flag("shard", "Only records of this shard id.").StringVar(&a.shard)
	cmd.Flag("since", "Only records at or after this time (RFC 3339, or a duration ago such as 2h).").StringVar(&a.since)
	cmd.Flag("until", "Only records before this time (RFC 3339, or a duration ago).").StringVar(&a.until)
	cmd.Flag("severity", "Only records of at least this severity: INFO, WARN, ERROR, CRITICAL.").StringVar(&a.severity)
	cmd.Flag("output", "Output format: text or json.").Short('o').Default("text").EnumVar(&a.output, "text", "json")
	return cmd.FullCommand(), func(_ context.Context, c cli) int {
		return auditShow(c, a, time.Now())
	}
}

type auditShowArgs struct {
	dir, event, shard, since, until, severity, output string
}

// recordFilter selects records for audit show.
type recordFilter struct {
	event, shard string
	since, until time.Time
	severity     audit.Severity
}

func (f recordFilter) match(r spool.Record) bool {
	switch {
	case f.event != "" && r.Name != f.event:
		return false
	case f.shard != "" && r.Field("shard_id") != f.shard:
		return false
	case !f.since.IsZero() && r.Time.Before(f.since):
		return false
	case !f.until.IsZero() && !r.Time.Before(f.until):
		return false
	}
	return r.Severity >= f.severity
}

// parseWhen reads an RFC 3339 time, or a duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-12-01T08:00:00Z) nor a duration ago (2h)", s)
	}
	return now.Add(-d), nil
}

func parseSeverity(s string) (audit.Severity, error) {
	for _, v := range []audit.Severity{audit.SeverityInfo, audit.SeverityWarn, audit.SeverityError, audit.SeverityCritical} {
		if strings.EqualFold(s, v.String()) {
			return v, nil
		}
	}
	return 0, fmt.Errorf("severity %q is not one of INFO, WARN, ERROR, CRITICAL", s)
}

func (a auditShowArgs) filter(now time.Time) (recordFilter, error) {
	f := recordFilter{event: strings.TrimPrefix(a.event, audit.NamePrefix), shard: a.shard}
	var err error
	if f.since, err = parseWhen(a.since, now); err != nil {
		return f, fmt.Errorf("--since: %w", err)
	}
	if f.until, err = parseWhen(a.until, now); err != nil {
		return f, fmt.Errorf("--until: %w", err)
	}
	if a.severity != "" {
		if f.severity, err = parseSeverity(a.severity); err != nil {
			return f, fmt.Errorf("--severity: %w", err)
		}
	}
	return f, nil
}

func auditShow(c cli, a auditShowArgs, now time.Time) int {
	f, err := a.filter(now)
	if err != nil {
		fmt.Fprintf(c.stderr, "vramseal-agent audit show: %v\n", err)
		return exitUsage
	}
	if st, err := os.Stat(a.dir); err != nil || !st.IsDir() {
		fmt.Fprintf(c.stderr, "vramseal-agent audit show: %s is not a readable audit spool folder\n", a.dir)
		return exitUsage
	}
	write := writeRecordText
	if a.output == "json" {
		write = writeRecordJSON
	}
	var werr error
	err = spool.ReadDir(a.dir, func(r spool.Record) error {
		if f.match(r) {
			werr = write(c.stdout, r)
		}
		return werr
	})
	if werr != nil {
		fmt.Fprintf(c.stderr, "vramseal-agent audit show: %v\n", werr)
		return exitFailed
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "vramseal-agent audit show: %v (audit verify says more)\n", err)
		return exitFailed
	}
	return exitOK
}

// writeRecordText writes one record on one line: seq, time, severity,
// event, uid, the fields (spec names), prev hash and hash.
func writeRecordText(w io.Writer, r spool.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "seq=%d time=%s severity=%s event=%s%s uid=%s", r.Seq, r.Time.UTC().Format(time.RFC3339Nano), r.Severity, audit.NamePrefix, r.Name, r.ID)
	for _, fl := range r.Fields {
		v := fmt.Sprint(fl.Value)
		if s, ok := fl.Value.(string); ok && (s == "" || strings.ContainsAny(s, " \"=\t\n")) {
			v = strconv.Quote(s)
		}
		fmt.Fprintf(&b, " %s=%s", fl.Key, v)
	}
	fmt.Fprintf(&b, " prev_hash=%s hash=%s\n", hex.EncodeToString(r.PrevHash[:]), hex.EncodeToString(r.Hash[:]))
	_, err := io.WriteString(w, b.String())
	return err
}

// shownRecord is a record as audit show -o json writes it: what is
// shipped, under the OTel names (docs/audit-events.md).
type shownRecord struct {
	Timestamp      string         `json:"timestamp"`
	EventName      string         `json:"event.name"`
	SeverityText   string         `json:"severity_text"`
	SeverityNumber int            `json:"severity_number"`
	UID            string         `json:"log.record.uid"`
	Seq            uint64         `json:"vramseal.audit.seq"`
	PrevHash       string         `json:"vramseal.audit.prev_hash"`
	Hash           string         `json:"vramseal.audit.hash"`
	TraceID        string         `json:"trace_id,omitempty"`
	SpanID         string         `json:"span_id,omitempty"`
	Attributes     map[string]any `json:"attributes"`
}

func writeRecordJSON(w io.Writer, r spool.Record) error {
	s := shownRecord{
		Timestamp: r.Time.UTC().Format(time.RFC3339Nano), EventName: audit.NamePrefix + r.Name,
		SeverityText: r.Severity.String(), SeverityNumber: int(r.Severity), UID: r.ID, Seq: r.Seq,
		PrevHash: hex.EncodeToString(r.PrevHash[:]), Hash: hex.EncodeToString(r.Hash[:]),
		Attributes: map[string]any{},
	}
	if r.TraceID != [16]byte{} {
		s.TraceID, s.SpanID = hex.EncodeToString(r.TraceID[:]), hex.EncodeToString(r.SpanID[:])
	}
	for _, kv := range auditotel.Attributes(r) {
		s.Attributes[string(kv.Key)] = kv.Value.AsInterface()
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("record %d: %w", r.Seq, err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
