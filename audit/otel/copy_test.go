package otel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
)

// shipToCollector ships n events through a pipeline to a real collector
// whose file exporter writes with the given compression ("" or "zstd"),
// waits for all of them, stops the collector and returns the spool's
// folder and the collector's file.
func shipToCollector(t *testing.T, compression string, n int) (string, string) {
	t.Helper()
	c := newCollector(t)
	if native, ok := strings.CutSuffix(compression, "+native"); ok {
		// The whole file one zstd stream of JSON lines (an alpha feature).
		compression = native
		c.args = append(c.args, "--feature-gates=exporter.file.nativeCompression")
	}
	if compression != "" {
		cfgPath := c.dir + "/config.yaml"
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.Replace(b, []byte("file/logs: {path: "), []byte("file/logs: {compression: "+compression+", path: "), 1)
		if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.endpoint(ProtocolHTTP))
	dir := t.TempDir()
	p := newTestPipeline(t, Config{Spool: spool.Config{Dir: dir, SegmentBytes: 2048}, Getenv: envWith(map[string]string{"OTEL_TRACES_EXPORTER": "none"})})
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		ev := audit.SealVerified{Header: audit.NewHeader(time.Now(), "node-a"), ShardID: fmt.Sprintf("shard-%d", i), GPUDevice: i % 2, Digest: "sha256-tree-v1:ab"}
		p.Emit(context.Background(), ev)
		want[ev.ID] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		f, err := os.Open(c.logsFile)
		got := 0
		if err == nil {
			recs, _ := ReadCopy(f, c.logsFile)
			f.Close()
			for _, r := range recs {
				if want[r.Attrs[KeyRecordUID].(string)] {
					got++
				}
			}
		}
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records reached the collector", got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.stop()
	return dir, c.logsFile
}

func readCopyT(t *testing.T, name string) []CopyRecord {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := ReadCopy(f, name)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func spoolRecords(t *testing.T, dir string) ([]spool.Record, uint64) {
	t.Helper()
	var recs []spool.Record
	if err := spool.ReadDir(dir, func(r spool.Record) error { recs = append(recs, r); return nil }); err != nil {
		t.Fatal(err)
	}
	a, err := spool.ReadAnchor(dir)
	if err != nil {
		t.Fatal(err)
	}
	return recs, a.ShippedSeq
}

// TestCollectorCopyVerifies ships records to a real collector, plain and
// zstd-compressed, and checks its copy: chain, sequence and checkpoint
// HMACs, and record by record against the spool.
func TestCollectorCopyVerifies(t *testing.T) {
	for _, comp := range []string{"", "zstd", "zstd+native"} {
		t.Run("compression="+comp, func(t *testing.T) {
			dir, file := shipToCollector(t, comp, 30)
			b, _ := os.ReadFile(file)
			switch {
			case comp == "zstd" && !bytes.HasPrefix(b[4:], zstdMagic):
				t.Fatalf("compression zstd: the file does not start with a length and a zstd frame: % x", b[:8])
			case comp == "zstd+native" && !bytes.HasPrefix(b, zstdMagic):
				t.Fatalf("native compression: the file is not one zstd stream: % x", b[:8])
			}
			key := make([]byte, 32) // newTestPipeline's checkpoint key
			rep := VerifyCopy(readCopyT(t, file), [][]byte{key})
			if !rep.OK() || len(rep.Workers) != 1 || rep.Workers[0].Records < 30 || rep.Workers[0].Checkpoints < 2 {
				t.Fatalf("copy: ok=%v workers %+v problems %v", rep.OK(), *rep.Workers[0], rep.Problems)
			}
			recs, shipped := spoolRecords(t, dir)
			rep.CompareSpool(recs, shipped)
			if !rep.OK() || len(rep.Compared) != 1 {
				t.Fatalf("compared with the spool: %v %v", rep.Compared, rep.Problems)
			}
			if other := VerifyCopy(readCopyT(t, file), [][]byte{bytes.Repeat([]byte{1}, 32)}); other.OK() {
				t.Fatal("checkpoints verified with another key")
			}
		})
	}
}

// The exporter rotates its files: the records of several files are
// checked as one copy, and a record in two of them is one record.
func TestCollectorCopyRotatedFiles(t *testing.T) {
	_, file := shipToCollector(t, "", 20)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) < 2 {
		t.Skipf("the collector wrote %d line(s); nothing to split", len(lines))
	}
	half := len(lines) / 2
	first, second := t.TempDir()+"/logs-1.jsonl", t.TempDir()+"/logs.jsonl"
	// The line at the cut goes into both, as a retried export would.
	_ = os.WriteFile(first, bytes.Join(lines[:half+1], nil), 0o600)
	_ = os.WriteFile(second, bytes.Join(lines[half:], nil), 0o600)
	recs := append(readCopyT(t, first), readCopyT(t, second)...)
	rep := VerifyCopy(recs, [][]byte{make([]byte, 32)})
	if !rep.OK() || rep.Workers[0].Records < 20 || len(rep.Duplicates) == 0 {
		t.Fatalf("two files: ok=%v %+v duplicates %v problems %v", rep.OK(), *rep.Workers[0], rep.Duplicates, rep.Problems)
	}
	// The newer file alone is a later part of the chain, intact.
	if alone := VerifyCopy(readCopyT(t, second), nil); !alone.OK() || alone.Workers[0].FirstSeq <= 1 {
		t.Fatalf("the newer file alone: %+v %v", *alone.Workers[0], alone.Problems)
	}
}

// editCopy rewrites the collector's JSON lines file: fn gets each log
// record (decoded JSON) and returns the records to write in its place.
func editCopy(t *testing.T, src, dst string, fn func(lr map[string]any) []any) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		for _, rl := range m["resourceLogs"].([]any) {
			for _, sl := range rl.(map[string]any)["scopeLogs"].([]any) {
				sm := sl.(map[string]any)
				var keep []any
				for _, lr := range sm["logRecords"].([]any) {
					keep = append(keep, fn(lr.(map[string]any))...)
				}
				sm["logRecords"] = keep
			}
		}
		nb, _ := json.Marshal(m)
		out.Write(append(nb, '\n'))
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func attr(lr map[string]any, key string) map[string]any {
	for _, a := range lr["attributes"].([]any) {
		kv := a.(map[string]any)
		if kv["key"] == key {
			return kv["value"].(map[string]any)
		}
	}
	return nil
}

// One altered, one removed and one duplicated record in the collector's
// file are each reported precisely.
func TestCollectorCopyTampering(t *testing.T) {
	dir, file := shipToCollector(t, "", 30)
	key := make([]byte, 32)
	recs, shipped := spoolRecords(t, dir)
	seqOf := func(lr map[string]any) string { v, _ := attr(lr, KeySeq)["intValue"].(string); return v }
	for _, tc := range []struct {
		name string
		edit func(lr map[string]any) []any
		want []string // each a problem's text, in order
		dup  string   // a duplicate's text
	}{
		{"altered", func(lr map[string]any) []any {
			if seqOf(lr) == "5" {
				attr(lr, "vramseal.shard.id")["stringValue"] = "shard-evil"
			}
			return []any{lr}
		}, []string{`seq 5 (uid `, `altered: attribute vramseal.shard.id is "shard-evil" in the copy; the record's body says "shard-`}, ""},
		{"removed", func(lr map[string]any) []any {
			if seqOf(lr) == "9" {
				return nil
			}
			return []any{lr}
		}, []string{"seq 10 ", "records 9..9 missing from the copy", "seq 9 (uid ", "in the spool, missing from the collector's copy"}, ""},
		{"duplicated", func(lr map[string]any) []any {
			if seqOf(lr) == "12" {
				return []any{lr, lr}
			}
			return []any{lr}
		}, nil, "worker node-a: seq 12 (uid "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			edited := t.TempDir() + "/logs.jsonl"
			editCopy(t, file, edited, tc.edit)
			rep := VerifyCopy(readCopyT(t, edited), [][]byte{key})
			rep.CompareSpool(recs, shipped)
			text := fmt.Sprint(rep.Problems)
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("problems %s: want %q", text, w)
				}
			}
			if tc.want == nil && !rep.OK() {
				t.Errorf("problems: %s", text)
			}
			if tc.want != nil && len(rep.Problems) != len(tc.want)/2 {
				t.Errorf("%d problems, want %d: %s", len(rep.Problems), len(tc.want)/2, text)
			}
			if tc.dup != "" && (len(rep.Duplicates) != 1 || !strings.HasPrefix(rep.Duplicates[0], tc.dup) || !strings.Contains(rep.Duplicates[0], "arrived 2 times")) {
				t.Errorf("duplicates %v, want one starting %q", rep.Duplicates, tc.dup)
			}
		})
	}
}
