package audit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/vramseal/vramseal/audit"
)

func TestRecentKeepsTheLastEventsNewestFirst(t *testing.T) {
	r := audit.NewRecent(3)
	if evs, total := r.Events(); len(evs) != 0 || total != 0 {
		t.Fatalf("empty: %d events, total %d", len(evs), total)
	}
	emit := func(id string) audit.Receipt {
		return r.Emit(context.Background(), audit.SealVerified{ShardID: id})
	}
	if err := emit("a").Wait(context.Background()); !errors.Is(err, audit.ErrNotDurable) {
		t.Errorf("receipt: %v, want ErrNotDurable", err)
	}
	emit("b")
	if got := ids(r); got != "b a" {
		t.Errorf("two events: %q", got)
	}
	for _, id := range []string{"c", "d", "e"} {
		emit(id)
	}
	if got := ids(r); got != "e d c" {
		t.Errorf("after five events in a ring of three: %q", got)
	}
	if _, total := r.Events(); total != 5 {
		t.Errorf("total %d, want 5", total)
	}
}

func TestRecentConcurrentEmits(t *testing.T) {
	r := audit.NewRecent(16)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 100; i++ {
				r.Emit(context.Background(), audit.SealVerified{ShardID: fmt.Sprint(g, i)})
				r.Events()
			}
		})
	}
	wg.Wait()
	if evs, total := r.Events(); len(evs) != 16 || total != 800 {
		t.Errorf("%d events kept, total %d; want 16, 800", len(evs), total)
	}
}

func ids(r *audit.Recent) string {
	evs, _ := r.Events()
	s := ""
	for i, ev := range evs {
		if i > 0 {
			s += " "
		}
		s += ev.(audit.SealVerified).ShardID
	}
	return s
}
