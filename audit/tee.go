package audit

import "context"

// Tee hands every event to Primary, whose Receipt it returns, and also to
// each of Also (whose receipts are ignored): the agent keeps its durable
// pipeline as Primary and echoes events to the operational log.
type Tee struct {
	Primary Emitter
	Also    []Emitter
}

// Emit emits ev to every emitter and returns the Primary's receipt.
func (t Tee) Emit(ctx context.Context, ev Event) Receipt {
	r := t.Primary.Emit(ctx, ev)
	for _, e := range t.Also {
		e.Emit(ctx, ev)
	}
	return r
}

var _ Emitter = Tee{}
