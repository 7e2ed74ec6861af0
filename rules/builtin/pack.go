package builtin

import (
	"time"

	"github.com/pgtripwire/pgtripwire/detector/alert"
	"github.com/pgtripwire/pgtripwire/detector/event"
)

// Rule is one built-in rule, as the detector's evaluator sees it.
type Rule interface {
	Eval(now time.Time, ev event.Event) []alert.Alert
	Tick(now time.Time) []alert.Alert
	Rules() map[string]alert.Severity
}

// Pack evaluates several built-in rules as one evaluator, in order.
type Pack []Rule

// Eval returns the transitions every rule produces for ev.
func (p Pack) Eval(now time.Time, ev event.Event) []alert.Alert {
	var out []alert.Alert
	for _, r := range p {
		out = append(out, r.Eval(now, ev)...)
	}
	return out
}

// Tick returns the transitions every rule has due.
func (p Pack) Tick(now time.Time) []alert.Alert {
	var out []alert.Alert
	for _, r := range p {
		out = append(out, r.Tick(now)...)
	}
	return out
}

// Rules merges the rules' names and severities.
func (p Pack) Rules() map[string]alert.Severity {
	all := make(map[string]alert.Severity)
	for _, r := range p {
		for name, sev := range r.Rules() {
			all[name] = sev
		}
	}
	return all
}
