package audit

// NameControlRateLimited is the event of a control API caller refused by
// the per-caller rate limit (control.rate_limit).
const NameControlRateLimited = "control.rate_limited"

// ControlRateLimited: a control API caller went over its rate limit. Only
// the first refusal of a burst is an event (the next one follows once the
// caller was let through again); every refusal is counted in
// vramseal_control_rate_limited_total. The caller is the event's
// (Header.Cause, kind api): the rate limit applies per uid.
type ControlRateLimited struct {
	Header
	// Endpoint is the refused call: method and path.
	Endpoint string
	// RequestsPerSecond and Burst are the limit in force.
	RequestsPerSecond string
	Burst             int
}

func (ControlRateLimited) Name() string       { return NameControlRateLimited }
func (ControlRateLimited) Severity() Severity { return SeverityWarn }
func (e ControlRateLimited) Head() Header     { return e.Header }
func (e ControlRateLimited) Fields() []Field {
	return []Field{
		{"endpoint", e.Endpoint},
		{"requests_per_second", e.RequestsPerSecond},
		{"burst", int64(e.Burst)},
	}
}

var _ Event = ControlRateLimited{}
