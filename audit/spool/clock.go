package spool

import "time"

// passed reports whether at least d has passed since since, by the
// spool's clock. A clock that reads earlier than since stepped back (an
// NTP step, an operator's date): that counts as passed, so the cadence
// starts again from now instead of waiting, possibly for hours, until the
// clock is back where it was. Time.Sub uses the monotonic reading when
// both times carry one (time.Now's); an injected clock may have none.
func passed(now, since time.Time, d time.Duration) bool {
	e := now.Sub(since)
	return e >= d || e < 0
}
