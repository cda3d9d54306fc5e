package otel

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/klauspost/compress/zstd"
)

// CopyRecord is one log record of the collector's copy, as the
// OpenTelemetry Collector's file exporter wrote it (OTLP JSON).
type CopyRecord struct {
	// Where names the record in its file: "FILE:N#M", the Nth message
	// (a line, or a length-prefixed block) and its Mth log record.
	Where          string
	EventName      string
	SeverityNumber int
	SeverityText   string
	TimeUnixNano   uint64
	// Attrs are the record's attributes: string, int64, bool or float64
	// values.
	Attrs map[string]any
}

// maxCopyMessage bounds one message of a collector file (after
// decompression).
const maxCopyMessage = 64 << 20

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// ReadCopy reads one file the collector's file exporter wrote, in any of
// its forms: JSON lines; a zstd stream of JSON lines (native compression);
// or messages each preceded by a 4-byte big-endian length, each JSON or
// zstd-compressed JSON (compression: zstd). name is used in Where.
func ReadCopy(r io.Reader, name string) ([]CopyRecord, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, err := br.Peek(4)
	if err != nil && len(head) == 0 {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	switch {
	case bytes.Equal(head, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxMemory(maxCopyMessage), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		return readLines(zr, name)
	case len(head) > 0 && (head[0] == '{' || head[0] == ' ' || head[0] == '\n' || head[0] == '\r' || head[0] == '\t'):
		return readLines(br, name)
	default:
		return readBlocks(br, name)
	}
}

func readLines(r io.Reader, name string) ([]CopyRecord, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxCopyMessage)
	var out []CopyRecord
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		recs, err := ParseCopyMessage(line, fmt.Sprintf("%s:%d", name, n))
		if err != nil {
			return out, err
		}
		out = append(out, recs...)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("%s: line %d: %w", name, n+1, err)
	}
	return out, nil
}

func readBlocks(r io.Reader, name string) ([]CopyRecord, error) {
	var out []CopyRecord
	var dec *zstd.Decoder
	defer func() {
		if dec != nil {
			dec.Close()
		}
	}()
	for n := 1; ; n++ {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, fmt.Errorf("%s: message %d: %w", name, n, err)
		}
		size := binary.BigEndian.Uint32(hdr[:])
		if size > maxCopyMessage {
			return out, fmt.Errorf("%s: message %d: length %d is more than %d", name, n, size, maxCopyMessage)
		}
		// Read what is there rather than trust the length up front.
		msg, err := io.ReadAll(io.LimitReader(r, int64(size)))
		if err != nil {
			return out, fmt.Errorf("%s: message %d: %w", name, n, err)
		}
		if len(msg) != int(size) {
			return out, fmt.Errorf("%s: message %d: cut short: %d of %d bytes", name, n, len(msg), size)
		}
		if bytes.HasPrefix(msg, zstdMagic) {
			if dec == nil {
				var err error
				if dec, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxCopyMessage), zstd.WithDecoderConcurrency(1)); err != nil {
					return out, fmt.Errorf("%s: %w", name, err)
				}
			}
			var err error
			if msg, err = dec.DecodeAll(msg, nil); err != nil {
				return out, fmt.Errorf("%s: message %d: zstd: %w", name, n, err)
			}
		}
		recs, err := ParseCopyMessage(msg, fmt.Sprintf("%s:%d", name, n))
		if err != nil {
			return out, err
		}
		out = append(out, recs...)
	}
}

type copyValue struct {
	StringValue *string          `json:"stringValue"`
	IntValue    *json.RawMessage `json:"intValue"`
	BoolValue   *bool            `json:"boolValue"`
	DoubleValue *float64         `json:"doubleValue"`
}

type copyKV struct {
	Key   string    `json:"key"`
	Value copyValue `json:"value"`
}

type copyMessage struct {
	ResourceLogs []struct {
		ScopeLogs []struct {
			LogRecords []struct {
				TimeUnixNano   json.RawMessage `json:"timeUnixNano"`
				EventName      string          `json:"eventName"`
				SeverityNumber int             `json:"severityNumber"`
				SeverityText   string          `json:"severityText"`
				Attributes     []copyKV        `json:"attributes"`
			} `json:"logRecords"`
		} `json:"scopeLogs"`
	} `json:"resourceLogs"`
}

// ParseCopyMessage parses one OTLP JSON ExportLogsServiceRequest (one line
// of the file exporter's output). OTLP JSON writes 64-bit integers as
// strings; both forms are taken.
func ParseCopyMessage(b []byte, where string) ([]CopyRecord, error) {
	var m copyMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: not OTLP JSON: %w", where, err)
	}
	var out []CopyRecord
	for _, rl := range m.ResourceLogs {
		for _, sl := range rl.ScopeLogs {
			for _, lr := range sl.LogRecords {
				r := CopyRecord{Where: fmt.Sprintf("%s#%d", where, len(out)+1), EventName: lr.EventName,
					SeverityNumber: lr.SeverityNumber, SeverityText: lr.SeverityText, Attrs: make(map[string]any, len(lr.Attributes))}
				if len(lr.TimeUnixNano) > 0 {
					t, err := jsonUint(lr.TimeUnixNano)
					if err != nil {
						return out, fmt.Errorf("%s: timeUnixNano: %w", r.Where, err)
					}
					r.TimeUnixNano = t
				}
				for _, kv := range lr.Attributes {
					v, err := kv.Value.value()
					if err != nil {
						return out, fmt.Errorf("%s: attribute %s: %w", r.Where, kv.Key, err)
					}
					r.Attrs[kv.Key] = v
				}
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func (v copyValue) value() (any, error) {
	switch {
	case v.StringValue != nil:
		return *v.StringValue, nil
	case v.IntValue != nil:
		s := string(*v.IntValue)
		if uq, err := strconv.Unquote(s); err == nil {
			s = uq
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("intValue %s: %w", *v.IntValue, err)
		}
		return n, nil
	case v.BoolValue != nil:
		return *v.BoolValue, nil
	case v.DoubleValue != nil:
		return *v.DoubleValue, nil
	}
	return nil, nil // an array or map: never one of ours
}

func jsonUint(raw json.RawMessage) (uint64, error) {
	s := string(raw)
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", raw, err)
	}
	return n, nil
}
