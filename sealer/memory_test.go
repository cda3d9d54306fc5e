package sealer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vramseal/vramseal/sealer"
)

// TestMemoryHoldsOffRelease: a Release waits for a Memory callback on the
// same shard, and Memory after the release finds no shard.
func TestMemoryHoldsOffRelease(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "s", Path: e.file(t, "f", data(3*leaf, 1)), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	inside, leave := make(chan struct{}), make(chan struct{})
	memDone := make(chan error, 1)
	go func() {
		memDone <- e.s.Memory(ctx, "test", "s", func(dev sealer.Device, a sealer.Allocation, size uint64) error {
			if size != 3*leaf || a.Size() != size || dev.Index() != 0 {
				return errors.New("wrong shard memory")
			}
			close(inside)
			<-leave
			return nil
		})
	}()
	<-inside
	released := make(chan error, 1)
	go func() { _, err := e.s.Release(ctx, "s"); released <- err }()
	select {
	case err := <-released:
		t.Fatalf("release returned (%v) while Memory's callback held the shard", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(leave)
	if err := <-memDone; err != nil {
		t.Fatal(err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if e.devs[0].LiveAllocations() != 0 {
		t.Error("the release did not free the allocation")
	}
	err := e.s.Memory(ctx, "test", "s", func(sealer.Device, sealer.Allocation, uint64) error { return nil })
	if sealer.KindOf(err) != sealer.KindNotFound {
		t.Errorf("Memory after release: %v", err)
	}
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "t", Path: e.file(t, "g", data(leaf, 2)), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	bad := errors.New("callback failed")
	if err := e.s.Memory(ctx, "test", "t", func(sealer.Device, sealer.Allocation, uint64) error { return bad }); !errors.Is(err, bad) || sealer.KindOf(err) != sealer.KindInvalid {
		t.Errorf("a callback's error: %v (kind %v)", err, sealer.KindOf(err))
	}
	lost := func(sealer.Device, sealer.Allocation, uint64) error { return sealer.ErrDeviceLost }
	if err := e.s.Memory(ctx, "test", "t", lost); sealer.KindOf(err) != sealer.KindDevice {
		t.Errorf("a lost device: %v (kind %v)", err, sealer.KindOf(err))
	}
}
