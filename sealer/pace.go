package sealer

import "context"

// Pacer is called before a verification reads bytes of a shard, and waits
// until the caller's byte budget allows them (or ctx ends). The schedule
// uses it to hold verification to verify.max_bytes_per_second chunk by
// chunk, so a large shard is read as a steady stream rather than a burst.
type Pacer func(ctx context.Context, bytes uint64) error

type pacerKey struct{}

// WithPacer returns a context whose verifications are paced by p.
func WithPacer(ctx context.Context, p Pacer) context.Context {
	return context.WithValue(ctx, pacerKey{}, p)
}

// pace waits for the context's Pacer, if any.
func pace(ctx context.Context, bytes uint64) error {
	if p, ok := ctx.Value(pacerKey{}).(Pacer); ok && p != nil {
		return p(ctx, bytes)
	}
	return nil
}
