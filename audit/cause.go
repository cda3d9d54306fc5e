package audit

import "context"

// What caused an event (the vramseal.cause attribute of every event).
const (
	CauseAPI         = "api"          // a control API call; Caller is the caller
	CauseSchedule    = "schedule"     // the verification schedule
	CauseDeclared    = "declared"     // the declared-shard loader (the configuration's shards)
	CauseReload      = "reload"       // a configuration reload (SIGHUP or a changed file)
	CauseShutdown    = "shutdown"     // the agent stopping
	CauseLease       = "lease"        // a consumer on the consumer socket; Caller is the consumer
	CauseOwnerExited = "owner_exited" // the owner of attached memory went away; Caller is the owner
	CauseDebug       = "debug"        // a debug fault switch (simulated GPU); Caller is the caller
	CauseStartup     = "startup"      // the agent's own checks at start-up (the VRAM-only policy)
	CauseTelemetry   = "telemetry"    // the GPU telemetry read (XIDs, processes on a GPU)
)

// Cause is what made an event happen: its kind, and the process behind it
// when one is (a control API caller, a consumer, an attach owner).
type Cause struct {
	Kind   string
	Caller *Caller
}

type causeKey struct{}

// WithCause returns a context whose events carry c.
func WithCause(ctx context.Context, c Cause) context.Context {
	return context.WithValue(ctx, causeKey{}, c)
}

// CauseFrom returns the cause ctx carries, if any.
func CauseFrom(ctx context.Context) (Cause, bool) {
	c, ok := ctx.Value(causeKey{}).(Cause)
	return c, ok
}

// CauseOr returns the cause ctx carries, or one of kind when it carries none.
func CauseOr(ctx context.Context, kind string) Cause {
	if c, ok := CauseFrom(ctx); ok {
		return c
	}
	return Cause{Kind: kind}
}

// HeaderFields are the fields every event carries from its header: the
// cause, the caller when there is one, and the GPU's UUID when the event
// names a GPU. They come before the event's own fields.
func (h Header) HeaderFields() []Field {
	var out []Field
	if h.Cause.Kind != "" {
		out = append(out, Field{"cause", h.Cause.Kind})
	}
	if c := h.Cause.Caller; c != nil {
		out = append(out, c.fields()...)
	}
	if h.GPUUUID != "" {
		out = append(out, Field{"gpu_uuid", h.GPUUUID})
	}
	return out
}

// AllFields are an event's header fields (HeaderFields) followed by its own.
func AllFields(ev Event) []Field {
	return append(ev.Head().HeaderFields(), ev.Fields()...)
}
