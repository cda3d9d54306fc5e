package otel

import (
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
	"os"
	"strings"
	"testing"
)

// TestDocMatchesMappings parses the attribute table of docs/audit-events.md
// and compares it, row for row, with Mappings.
func TestDocMatchesMappings(t *testing.T) {
	b, err := os.ReadFile("../../docs/audit-events.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "| event | field | attribute | type |")
	if !ok {
		t.Fatal("docs/audit-events.md has no attribute table")
	}
	doc := map[Mapping]bool{}
	for _, line := range strings.Split(table, "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 4 {
			t.Fatalf("bad row %q", line)
		}
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		ev := strings.TrimPrefix(cells[0], "vramseal.")
		if strings.HasPrefix(cells[0], "every ") { // every record, every event, every event with a caller, …
			ev = AllEvents
		}
		doc[Mapping{ev, cells[1], cells[2], cells[3]}] = true
	}
	for _, m := range Mappings {
		if !doc[m] {
			t.Errorf("the code maps %+v; the doc does not say so", m)
		}
		delete(doc, m)
	}
	for m := range doc {
		t.Errorf("the doc lists %+v; the code does not map it", m)
	}
}

// TestEveryFieldMapped checks that every field of every event has an
// attribute key, and that LogRecord puts each one on the record.
func TestEveryFieldMapped(t *testing.T) {
	for _, ev := range sampleEvents(time.Now()) {
		rec := spool.Record{Seq: 7, Entry: spool.EntryOf(ev)}
		lr := LogRecord(rec)
		got := map[string]bool{}
		lr.WalkAttributes(func(kv attribute.KeyValue) bool { got[string(kv.Key)] = true; return true })
		for _, f := range ev.Fields() {
			key, ok := AttributeKey(ev.Name(), f.Key)
			if !ok || !got[key] {
				t.Errorf("%s.%s: mapped %v, on the record %v", ev.Name(), f.Key, ok, got[key])
			}
		}
		if lr.EventName() != audit.NamePrefix+ev.Name() || lr.SeverityText() != ev.Severity().String() || !got[KeyRecordUID] {
			t.Errorf("%s: record %v", ev.Name(), lr.EventName())
		}
	}
}
