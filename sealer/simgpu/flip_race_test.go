package simgpu

import (
	"context"
	"sync"
	"testing"

	"github.com/vramseal/vramseal/sealer"
)

// `debug corrupt` flips a bit while a scheduled verification may be
// reading the same allocation: the two must not race (go test -race).
func TestFlipBitDuringReads(t *testing.T) {
	devs, err := New(Config{GPUs: 1, MemoryBytes: 1 << 20, Properties: DefaultProperties()})
	if err != nil {
		t.Fatal(err)
	}
	d := devs[0]
	ctx := context.Background()
	a, err := d.Alloc(ctx, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			if err := d.FlipBit(ctx, a, uint64(i*97)%(64<<10), uint(i%8)); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for range 200 {
			if err := d.Read(ctx, a, 0, buf); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for range 50 {
			if _, err := d.LeafDigests(ctx, a, 64<<10, sealer.MinLeafSize); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
}
