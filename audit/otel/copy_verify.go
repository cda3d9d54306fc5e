package otel

import (
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	"go.opentelemetry.io/otel/attribute"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
)

// CopyProblem is one place where the collector's copy is not intact.
type CopyProblem struct {
	Worker string
	Seq    uint64
	UID    string
	// Where names the log record in the collector's files ("" for a
	// record that is only in the spool).
	Where  string
	Reason string
}

func (p CopyProblem) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "worker %s: seq %d", p.Worker, p.Seq)
	if p.UID != "" {
		fmt.Fprintf(&b, " (uid %s)", p.UID)
	}
	if p.Where != "" {
		fmt.Fprintf(&b, " at %s", p.Where)
	}
	return b.String() + ": " + p.Reason
}

// WorkerCopy is what the copy holds of one worker's chain.
type WorkerCopy struct {
	Worker      string
	Records     int // distinct records
	FirstSeq    uint64
	LastSeq     uint64
	Checkpoints int
	// Tail counts the records after the last checkpoint: no HMAC vouches
	// for them yet.
	Tail  uint64
	bySeq map[uint64]copyEntry
}

// CopyReport is what VerifyCopy found.
type CopyReport struct {
	Workers []*WorkerCopy // by worker id
	// CheckpointsChecked is true when keys were given.
	CheckpointsChecked bool
	// Duplicates lists the records that arrived more than once, identical
	// (an export retried after a crash): not a problem.
	Duplicates []string
	// Compared says what a comparison with the spool covered (empty when
	// none was made).
	Compared []string
	Problems []CopyProblem
}

// OK reports whether the copy (and the comparison, if made) is intact.
func (r CopyReport) OK() bool { return len(r.Problems) == 0 }

type copyEntry struct {
	rec    spool.Record
	where  string
	times  int
	wheres []string
}

// VerifyCopy checks the collector's copy of the audit records: each
// record's attributes against its body (the bytes the spool framed,
// shipped as vramseal.audit.body), de-duplicated by log.record.uid, and
// per worker the sequence without gaps, the hash chain and, with keys,
// every checkpoint's HMAC (a checkpoint verifies when any key does).
func VerifyCopy(recs []CopyRecord, keys [][]byte) CopyReport {
	rep := CopyReport{CheckpointsChecked: len(keys) > 0}
	workers := map[string]*WorkerCopy{}
	byUID := map[string]*copyEntry{}
	for _, cr := range recs {
		uid, _ := cr.Attrs[KeyRecordUID].(string)
		worker, _ := cr.Attrs[KeyWorkerID].(string)
		seq, _ := cr.Attrs[KeySeq].(int64)
		prob := CopyProblem{Worker: worker, Seq: uint64(max(seq, 0)), UID: uid, Where: cr.Where}
		b64, _ := cr.Attrs[KeyBody].(string)
		if b64 == "" {
			prob.Reason = "no " + KeyBody + " attribute: the record cannot be checked against the chain"
			rep.Problems = append(rep.Problems, prob)
			continue
		}
		body, err := base64.StdEncoding.DecodeString(b64)
		var rec spool.Record
		if err == nil {
			rec, err = spool.DecodeBody(body)
		}
		if err != nil {
			prob.Reason = KeyBody + " does not decode: " + err.Error()
			rep.Problems = append(rep.Problems, prob)
			continue
		}
		prob.Worker, prob.Seq, prob.UID = rec.WorkerID, rec.Seq, rec.ID
		for _, why := range attributeDiffs(cr, rec) {
			p := prob
			p.Reason = "altered: " + why
			rep.Problems = append(rep.Problems, p)
		}
		key := rec.WorkerID + "\x00" + rec.ID
		if e := byUID[key]; e != nil {
			e.times++
			e.wheres = append(e.wheres, cr.Where)
			if e.rec.Hash != rec.Hash {
				p := prob
				p.Reason = fmt.Sprintf("log.record.uid arrived twice with different bodies (first at %s)", e.where)
				rep.Problems = append(rep.Problems, p)
			}
			continue
		}
		w := workers[rec.WorkerID]
		if w == nil {
			w = &WorkerCopy{Worker: rec.WorkerID, bySeq: map[uint64]copyEntry{}}
			workers[rec.WorkerID] = w
		}
		if o, dup := w.bySeq[rec.Seq]; dup {
			p := prob
			p.Reason = fmt.Sprintf("a second record with this sequence number (the other: uid %s at %s)", o.rec.ID, o.where)
			rep.Problems = append(rep.Problems, p)
			continue
		}
		e := &copyEntry{rec: rec, where: cr.Where, times: 1, wheres: []string{cr.Where}}
		byUID[key] = e
		w.bySeq[rec.Seq] = *e
	}
	for _, e := range byUID {
		if e.times > 1 {
			rep.Duplicates = append(rep.Duplicates, fmt.Sprintf("worker %s: seq %d (uid %s) arrived %d times: %s", e.rec.WorkerID, e.rec.Seq, e.rec.ID, e.times, strings.Join(e.wheres, ", ")))
		}
	}
	sort.Strings(rep.Duplicates)
	for _, w := range workers {
		rep.Workers = append(rep.Workers, w)
	}
	sort.Slice(rep.Workers, func(i, j int) bool { return rep.Workers[i].Worker < rep.Workers[j].Worker })
	for _, w := range rep.Workers {
		rep.Problems = append(rep.Problems, w.checkChain(keys)...)
	}
	sortProblems(rep.Problems)
	return rep
}

func sortProblems(ps []CopyProblem) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Worker != ps[j].Worker {
			return ps[i].Worker < ps[j].Worker
		}
		return ps[i].Seq < ps[j].Seq
	})
}

// checkChain checks one worker's records in sequence order.
func (w *WorkerCopy) checkChain(keys [][]byte) []CopyProblem {
	var probs []CopyProblem
	seqs := make([]uint64, 0, len(w.bySeq))
	for s := range w.bySeq {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	w.Records = len(seqs)
	var lastCkpt uint64
	for i, s := range seqs {
		e := w.bySeq[s]
		p := CopyProblem{Worker: w.Worker, Seq: s, UID: e.rec.ID, Where: e.where}
		if i == 0 {
			w.FirstSeq = s
		} else if prev := seqs[i-1]; s != prev+1 {
			p.Reason = fmt.Sprintf("records %d..%d missing from the copy", prev+1, s-1)
			probs = append(probs, p)
		} else if e.rec.PrevHash != w.bySeq[prev].rec.Hash {
			p.Reason = fmt.Sprintf("hash chain break: prev_hash is not the hash of record %d (one of the two was altered or replaced)", prev)
			probs = append(probs, p)
		}
		w.LastSeq = s
		if e.rec.Name != spool.NameCheckpoint {
			continue
		}
		w.Checkpoints++
		lastCkpt = s
		if len(keys) > 0 && !spool.CheckpointVerifies(e.rec, keys) {
			p.Reason = "checkpoint HMAC does not verify with any seal secret given (altered records, or another seal secret)"
			probs = append(probs, p)
		}
	}
	if w.Records > 0 {
		if lastCkpt == 0 {
			w.Tail = uint64(w.Records)
		} else {
			w.Tail = w.LastSeq - lastCkpt
		}
	}
	return probs
}

// attributeDiffs compares what the copy says with what the record's body
// says: event name, severity, time and every attribute the record ships.
func attributeDiffs(cr CopyRecord, rec spool.Record) []string {
	var out []string
	if want := audit.NamePrefix + rec.Name; cr.EventName != want {
		out = append(out, fmt.Sprintf("event.name is %q in the copy; the record's body says %q", cr.EventName, want))
	}
	if cr.SeverityNumber != int(rec.Severity) || cr.SeverityText != rec.Severity.String() {
		out = append(out, fmt.Sprintf("severity is %d %s in the copy; the record's body says %d %s", cr.SeverityNumber, cr.SeverityText, int(rec.Severity), rec.Severity))
	}
	if cr.TimeUnixNano != uint64(rec.Time.UnixNano()) {
		out = append(out, fmt.Sprintf("timestamp is %d in the copy; the record's body says %d", cr.TimeUnixNano, rec.Time.UnixNano()))
	}
	want := map[string]bool{}
	for _, kv := range Attributes(rec) {
		k := string(kv.Key)
		want[k] = true
		got, ok := cr.Attrs[k]
		if !ok {
			out = append(out, fmt.Sprintf("attribute %s is missing from the copy", k))
			continue
		}
		if w := attrValue(kv.Value); got != w {
			out = append(out, fmt.Sprintf("attribute %s is %v in the copy; the record's body says %v", k, quote(got), quote(w)))
		}
	}
	for k := range cr.Attrs {
		if !want[k] && (strings.HasPrefix(k, "vramseal.") || k == KeyRecordUID) {
			out = append(out, fmt.Sprintf("attribute %s is in the copy, not in the record's body", k))
		}
	}
	sort.Strings(out)
	return out
}

func attrValue(v attribute.Value) any {
	switch v.Type() {
	case attribute.STRING:
		return v.AsString()
	case attribute.INT64:
		return v.AsInt64()
	case attribute.BOOL:
		return v.AsBool()
	case attribute.FLOAT64:
		return v.AsFloat64()
	}
	return v.Emit()
}

func quote(v any) string {
	if s, ok := v.(string); ok {
		if len(s) > 80 {
			s = s[:77] + "..."
		}
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

// CompareSpool compares the copy with the records of the local spool,
// record by record (the spool's worker ids pick the chains): what is in
// one and not the other, and what differs. Records after shipped are not
// expected in the copy yet; records of the copy older than the spool's
// first were removed from it by retention.
func (r *CopyReport) CompareSpool(recs []spool.Record, shipped uint64) {
	byWorker := map[string]*WorkerCopy{}
	for _, w := range r.Workers {
		byWorker[w.Worker] = w
	}
	first := map[string]uint64{}
	inSpool := map[string]map[uint64]bool{}
	counts := map[string][3]int{} // same, unshipped, older
	for _, rec := range recs {
		if _, ok := first[rec.WorkerID]; !ok {
			first[rec.WorkerID] = rec.Seq
			inSpool[rec.WorkerID] = map[uint64]bool{}
		}
		inSpool[rec.WorkerID][rec.Seq] = true
		c := counts[rec.WorkerID]
		var e copyEntry
		var ok bool
		if w := byWorker[rec.WorkerID]; w != nil {
			e, ok = w.bySeq[rec.Seq]
		}
		p := CopyProblem{Worker: rec.WorkerID, Seq: rec.Seq, UID: rec.ID, Where: e.where}
		switch {
		case !ok && rec.Seq > shipped:
			c[1]++
		case !ok:
			p.Reason = "in the spool, missing from the collector's copy"
			r.Problems = append(r.Problems, p)
		case e.rec.Hash != rec.Hash:
			p.Reason = fmt.Sprintf("differs: the spool's record hashes to %x, the copy's to %x", rec.Hash[:8], e.rec.Hash[:8])
			r.Problems = append(r.Problems, p)
		default:
			c[0]++
		}
		counts[rec.WorkerID] = c
	}
	for _, w := range r.Workers {
		f, ok := first[w.Worker]
		if !ok {
			continue
		}
		c := counts[w.Worker]
		for s, e := range w.bySeq {
			switch {
			case inSpool[w.Worker][s]:
			case s < f:
				c[2]++
			default:
				r.Problems = append(r.Problems, CopyProblem{Worker: w.Worker, Seq: s, UID: e.rec.ID, Where: e.where, Reason: "in the collector's copy, missing from the spool"})
			}
		}
		counts[w.Worker] = c
	}
	for wk, c := range counts {
		r.Compared = append(r.Compared, fmt.Sprintf("worker %s: %d records the same in both, %d not shipped yet, %d older than the spool's first (removed by retention)", wk, c[0], c[1], c[2]))
	}
	sort.Strings(r.Compared)
	sortProblems(r.Problems)
}
