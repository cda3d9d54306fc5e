package statuspage

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"time"
)

//go:embed page.html.tmpl
var pageTemplate string

// page is parsed once; html/template escapes every value by its context
// (text, attribute, URL, CSS), so shard ids, model references and event
// fields, which users supply, cannot inject markup.
var page = template.Must(template.New("statuspage").Funcs(template.FuncMap{
	"bytes":    func(n uint64) string { return formatBytes(n) },
	"bytes64":  func(n int64) string { return formatBytes(uint64(max(n, 0))) },
	"pct":      func(p float64) string { return strconv.FormatFloat(p, 'f', 2, 64) + "%" },
	"ago":      ago,
	"due":      due,
	"dur":      formatDuration,
	"rfc3339":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"clock":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	"sevClass": severityClass,
}).Parse(pageTemplate))

// Render writes v as the HTML page. It reads nothing but v.
func Render(w io.Writer, v *View) error {
	return page.ExecuteTemplate(w, "page", v)
}

// Refresh is how often the page reloads itself, in seconds.
func (v *View) Refresh() int { return RefreshSeconds }

// formatBytes writes n in binary units (KiB, MiB, …) with one decimal.
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatDuration rounds d for a reader: seconds under a minute, then
// minutes and seconds, hours and minutes, days and hours.
func formatDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// ago says how long before now t was ("never" for the zero time).
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	if t.After(now) {
		return "just now"
	}
	return formatDuration(now.Sub(t)) + " ago"
}

// due says when t comes relative to now ("—" for the zero time).
func due(now, t time.Time) string {
	switch {
	case t.IsZero():
		return "—"
	case t.After(now):
		return "in " + formatDuration(t.Sub(now))
	}
	return "due now (" + formatDuration(now.Sub(t)) + " late)"
}

func severityClass(s string) string {
	switch s {
	case "CRITICAL", "ERROR":
		return "bad"
	case "WARN":
		return "warn"
	}
	return "ok"
}
