package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// Names of the spool's own records (without the "vramseal." prefix), shipped
// like events.
const (
	NameCheckpoint = "audit.checkpoint"
	NameLoss       = "audit.loss"
	NameRepair     = "audit.repair"
)

// Repair actions taken at start-up.
const (
	RepairTruncated   = "truncated"
	RepairQuarantined = "quarantined"
	// RepairMissing: the segments end before the anchor in the cursor
	// file; the chain goes on after the anchor.
	RepairMissing = "missing"
)

// Entry is what the spool keeps of one record: an audit event, or one of the
// spool's own records, in schema terms (field keys as in the specification).
// The OTel mapping happens when the record is shipped.
type Entry struct {
	// Name is the event name without the "vramseal." prefix.
	Name     string
	Severity audit.Severity
	// ID is the event id, sent as log.record.uid.
	ID   string
	Time time.Time
	// The span context of the operation that emitted the event (zero when
	// there was none).
	TraceID    [16]byte
	SpanID     [8]byte
	TraceFlags byte
	// WorkerID names the agent that emitted the event.
	WorkerID string
	// Fields are the event's own fields; values are string, int64, uint64
	// or bool.
	Fields []audit.Field
}

// Field returns the value of the field named key, or nil.
func (e Entry) Field(key string) any {
	for _, f := range e.Fields {
		if f.Key == key {
			return f.Value
		}
	}
	return nil
}

// Record is one record of the spool: its place in the chain and its entry.
type Record struct {
	Seq      uint64
	PrevHash [32]byte
	// Hash is SHA-256 of the record's body; the next record carries it
	// as PrevHash.
	Hash [32]byte
	// Body is the record's body exactly as framed on disk (version, seq,
	// prev hash, payload): shipped as it is, so that a copy of the record
	// can be checked against the chain (nil for a Record built by hand).
	Body []byte
	Entry
}

// Framing. On disk a record is
//
//	uint32 BE  length of body
//	uint32 BE  CRC-32C (Castagnoli) of body
//	body:      byte version (1) | uint64 BE seq | [32]byte prev hash | payload
//
// and its hash is SHA-256(body). The payload encodes the Entry:
//
//	int64 BE time (Unix ns) | byte severity | byte trace flags |
//	[16]byte trace id | [8]byte span id | str id | str name | str worker id |
//	uvarint field count | per field: str key | byte type | value
//
// where str is a uvarint length and the bytes, and a value is a str (type 1),
// a zig-zag varint (2, int64), a uvarint (3, uint64) or one byte (4, bool).
const (
	frameHeader    = 8
	bodyFixed      = 1 + 8 + 32
	recordVersion  = 1
	maxRecordBytes = 1 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const (
	typeString = 1
	typeInt    = 2
	typeUint   = 3
	typeBool   = 4
)

// appendFrame appends the framed record (seq, prev, e) to dst and returns
// the new slice and the record's hash.
func appendFrame(dst []byte, seq uint64, prev [32]byte, e *Entry) ([]byte, [32]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeader)...)
	dst = append(dst, recordVersion)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = append(dst, prev[:]...)
	var err error
	dst, err = appendPayload(dst, e)
	if err != nil {
		return dst[:start], [32]byte{}, err
	}
	body := dst[start+frameHeader:]
	if len(body) > maxRecordBytes {
		return dst[:start], [32]byte{}, fmt.Errorf("record of %d bytes is larger than %d", len(body), maxRecordBytes)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(body, crcTable))
	return dst, sha256.Sum256(body), nil
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendPayload(dst []byte, e *Entry) ([]byte, error) {
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Time.UnixNano()))
	if e.Severity < 0 || e.Severity > math.MaxUint8 {
		return dst, fmt.Errorf("severity %d out of range", e.Severity)
	}
	dst = append(dst, byte(e.Severity), e.TraceFlags)
	dst = append(dst, e.TraceID[:]...)
	dst = append(dst, e.SpanID[:]...)
	dst = appendStr(dst, e.ID)
	dst = appendStr(dst, e.Name)
	dst = appendStr(dst, e.WorkerID)
	dst = binary.AppendUvarint(dst, uint64(len(e.Fields)))
	for _, f := range e.Fields {
		dst = appendStr(dst, f.Key)
		switch v := f.Value.(type) {
		case string:
			dst = append(dst, typeString)
			dst = appendStr(dst, v)
		case int64:
			dst = append(dst, typeInt)
			dst = binary.AppendVarint(dst, v)
		case int:
			dst = append(dst, typeInt)
			dst = binary.AppendVarint(dst, int64(v))
		case uint64:
			dst = append(dst, typeUint)
			dst = binary.AppendUvarint(dst, v)
		case bool:
			b := byte(0)
			if v {
				b = 1
			}
			dst = append(dst, typeBool, b)
		default:
			return dst, fmt.Errorf("field %q: unsupported value type %T", f.Key, f.Value)
		}
	}
	return dst, nil
}

// errPayload is wrapped by every payload decoding error.
var errPayload = errors.New("malformed record payload")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errPayload, what)
	}
}

func (d *decoder) bytes(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.fail(what)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str(what string) string {
	n := d.uvarint(what)
	if n > uint64(len(d.b)) {
		d.fail(what)
		return ""
	}
	return string(d.bytes(int(n), what))
}

// DecodeBody decodes a record body (what Record.Body holds): the record,
// its hash, and its entry.
func DecodeBody(body []byte) (Record, error) { return decodeBody(body) }

// decodeBody decodes a record body (without the frame header).
func decodeBody(body []byte) (Record, error) {
	var r Record
	if len(body) < bodyFixed {
		return r, fmt.Errorf("%w: body of %d bytes", errPayload, len(body))
	}
	if body[0] != recordVersion {
		return r, fmt.Errorf("%w: version %d", errPayload, body[0])
	}
	r.Seq = binary.BigEndian.Uint64(body[1:9])
	copy(r.PrevHash[:], body[9:41])
	r.Hash = sha256.Sum256(body)
	r.Body = bytes.Clone(body)
	d := &decoder{b: body[bodyFixed:]}
	ts := d.bytes(8, "time")
	sev := d.bytes(2, "severity")
	tid := d.bytes(16, "trace id")
	sid := d.bytes(8, "span id")
	if d.err != nil {
		return r, d.err
	}
	r.Time = time.Unix(0, int64(binary.BigEndian.Uint64(ts))).UTC()
	r.Severity = audit.Severity(sev[0])
	r.TraceFlags = sev[1]
	copy(r.TraceID[:], tid)
	copy(r.SpanID[:], sid)
	r.ID = d.str("id")
	r.Name = d.str("name")
	r.WorkerID = d.str("worker id")
	n := d.uvarint("field count")
	if n > uint64(len(d.b)) {
		d.fail("field count")
	}
	if d.err != nil {
		return r, d.err
	}
	r.Fields = make([]audit.Field, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.str("field key")
		t := d.bytes(1, "field type")
		if d.err != nil {
			break
		}
		var v any
		switch t[0] {
		case typeString:
			v = d.str("string value")
		case typeInt:
			v = d.varint("int value")
		case typeUint:
			v = d.uvarint("uint value")
		case typeBool:
			b := d.bytes(1, "bool value")
			if d.err == nil {
				if b[0] > 1 {
					d.fail("bool value")
				}
				v = b[0] == 1
			}
		default:
			d.fail(fmt.Sprintf("field type %d", t[0]))
		}
		r.Fields = append(r.Fields, audit.Field{Key: k, Value: v})
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	return r, d.err
}

// EntryOf turns an audit event into a spool entry (without span context).
func EntryOf(ev audit.Event) Entry {
	h := ev.Head()
	fields := audit.AllFields(ev)
	out := make([]audit.Field, 0, len(fields))
	for _, f := range fields {
		if i, ok := f.Value.(int); ok {
			f.Value = int64(i)
		}
		out = append(out, f)
	}
	return Entry{Name: ev.Name(), Severity: ev.Severity(), ID: h.ID, Time: h.Time, WorkerID: h.WorkerID, Fields: out}
}
