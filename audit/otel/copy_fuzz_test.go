package otel

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzReadCopy feeds arbitrary bytes to the collector-file reader and the
// copy verifier: an error or problems, never a panic.
func FuzzReadCopy(f *testing.F) {
	line := []byte(`{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000000","eventName":"vramseal.seal.verified","severityNumber":9,"severityText":"INFO","attributes":[{"key":"log.record.uid","value":{"stringValue":"u"}},{"key":"vramseal.audit.seq","value":{"intValue":"1"}},{"key":"vramseal.audit.body","value":{"stringValue":"AQAAAAAAAAAB"}}]}]}]}]}`)
	f.Add(append(append([]byte{}, line...), '\n'))
	enc, _ := zstd.NewWriter(nil)
	z := enc.EncodeAll(line, nil)
	f.Add(z)
	block := binary.BigEndian.AppendUint32(nil, uint32(len(z)))
	f.Add(append(block, z...))
	f.Add([]byte{0, 0, 0, 3, '{', '}', '\n'})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, _ := ReadCopy(bytes.NewReader(b), "f")
		rep := VerifyCopy(recs, [][]byte{make([]byte, 32)})
		rep.CompareSpool(nil, 0)
	})
}
