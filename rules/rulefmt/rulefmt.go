package rulefmt

import (
	"fmt"
	"net/netip"
	"os"
	"text/template"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/yamlfile"
)

// File is one parsed and compiled rule file.
type File struct {
	Path   string
	Groups []Group
}

// Group is a named list of rules; the name is unique within its file.
type Group struct {
	Name  string
	Rules []*Rule
	Pos   Pos // of the group's name
}

// Severity is how urgent an alert is; the values are part of the alert contract.
type Severity string

// Severities.
const (
	SeverityCritical Severity = "critical"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

// Mode says what happens when a rule fires.
type Mode string

// Modes.
const (
	// ModePage delivers the alert (the default).
	ModePage Mode = "page"
	// ModeShadow records and counts the alert but does not deliver it: how a
	// new or retuned rule is tried on production traffic.
	ModeShadow Mode = "shadow"
)

// AggregateFunction is how the values of the matching events of a window are
// combined.
type AggregateFunction string

// Aggregate functions.
const (
	AggCount         AggregateFunction = "count"          // number of matching events
	AggSum           AggregateFunction = "sum"            // sum of a numeric field
	AggMax           AggregateFunction = "max"            // maximum of a numeric field
	AggCountDistinct AggregateFunction = "count_distinct" // number of distinct values of a field
)

// Aggregate combines the matching events of a sliding window, per group.
type Aggregate struct {
	Function AggregateFunction
	// Field is the event field summed, maximised or counted distinct; "" for count.
	Field  string
	Window time.Duration
	// By lists the event fields whose values make a group (and the alert's
	// labels); empty means one group for the rule.
	By []string
}

// Condition is what makes a rule fire; exactly one of its fields is set,
// or none for a rule without aggregate that fires on every matching event,
// or FirstSeen and Threshold together with an aggregate (the threshold on
// the aggregate of the events whose key is new).
type Condition struct {
	Threshold *Threshold
	Baseline  *Baseline
	FirstSeen *FirstSeen
}

// Op is a comparison operator of a threshold.
type Op string

// Comparison operators.
const (
	OpGT Op = ">"
	OpGE Op = ">="
	OpLT Op = "<"
	OpLE Op = "<="
	OpEQ Op = "=="
	OpNE Op = "!="
)

// Compare reports whether "v op threshold" holds.
func (o Op) Compare(v, threshold float64) bool {
	switch o {
	case OpGT:
		return v > threshold
	case OpGE:
		return v >= threshold
	case OpLT:
		return v < threshold
	case OpLE:
		return v <= threshold
	case OpEQ:
		return v == threshold
	case OpNE:
		return v != threshold
	}
	return false
}

// Threshold fires when the value crosses Value. The value is the aggregate,
// or, for a rule without aggregate, the event field Field.
type Threshold struct {
	Field string // only for a rule without aggregate
	Op    Op
	Value float64
}

// Baseline fires when the aggregate of a group deviates from what was learned
// for it by more than ZScore standard deviations and is at least Floor, once
// LearnFor has passed.
type Baseline struct {
	LearnFor time.Duration
	ZScore   float64
	Floor    float64
}

// FirstSeen fires on a key (a tuple of event field values) not seen during
// the learning period, nor in the ForgetAfter before the event (0: never
// forget). Beside an aggregate and a threshold, it is a filter instead: the
// aggregate counts the events whose key is new, grouped by aggregate.by, and
// the threshold fires (Condition.Threshold is then set too).
type FirstSeen struct {
	Key         []string
	LearnFor    time.Duration
	ForgetAfter time.Duration
	// LearnPer lists fields of Key whose every value learns for itself: its
	// learning period starts at its first matching event, not at the rule's
	// first evaluation (a role deployed after the detector started learns
	// its own first minutes). Empty: one learning period for the rule.
	LearnPer []string `json:",omitempty"`
	// Remember says which keys are remembered; "" is RememberAlways.
	Remember Remember `json:",omitempty"`
}

// Remember says which keys a first_seen condition remembers. The omitempty
// tags above keep the definition hash of rules that set neither field what
// it was before they existed: their learned keys survive an upgrade.
type Remember string

// What first_seen remembers.
const (
	// RememberAlways remembers every key seen: a key is new once, the first
	// time it is seen after learning (or after ForgetAfter without it).
	RememberAlways Remember = "always"
	// RememberLearning remembers only the keys seen while learning: every
	// event of another key is new, however often it comes. What was learned
	// is an allow-list; what comes after never joins it.
	RememberLearning Remember = "learning"
)

// Exception is an allow-list tuple: an event matching every field that is set
// does not count towards the rule. A zero field matches anything; an
// exception with no field set is refused at load.
type Exception struct {
	Role, Application, Relation, Database string
	ClientCIDR                            netip.Prefix // invalid (zero) when not set
	QueryID                               int64
	HasQueryID                            bool
	// Expires is when the exception stops applying; zero for never. A date
	// (2027-01-31) is valid through that day, UTC: Expires is the next midnight.
	Expires time.Time
	Pos     Pos
}

// Rule is one detection, compiled and ready to be evaluated.
type Rule struct {
	Name        string
	Description string
	Severity    Severity
	Tags        []string
	Mode        Mode
	// MatchExpr is the source text of the CEL match expression.
	MatchExpr     string
	Aggregate     *Aggregate // nil: each matching event is its own value
	Condition     Condition
	For           time.Duration
	KeepFiringFor time.Duration
	Exceptions    []Exception
	Labels        map[string]string
	Annotations   map[string]string
	// Precise says the rule cannot be wrong: what matches it is an intrusion, never
	// legitimate work (a canary row returned to a role). Only a precise rule may carry
	// a Response.
	Precise bool
	// Response is what the detector does on its own when the rule fires, if the
	// configuration's response.automatic allows it; nil for none.
	Response *Response
	// Pos is the position of the rule's name.
	Pos Pos

	match       *compiledMatch
	labels      map[string]*template.Template
	annotations map[string]*template.Template
}

// Response is a rule's automatic response.
type Response struct {
	// Terminate ends the session that made the rule fire (the triggering event's
	// pid), and only it.
	Terminate bool
}

// ParseFile reads, parses and compiles one rule file. On failure the File is
// nil and Errors holds every problem found.
func ParseFile(path string) (*File, Errors) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{Pos: Pos{File: path}, Msg: fmt.Sprintf("read rule file: %v", err)}}
	}
	return Parse(path, data)
}

// Parse parses and compiles rule file data; name is the file name used in
// positions. On failure the File is nil and Errors holds every problem found,
// in file order.
func Parse(name string, data []byte) (*File, Errors) {
	d := &decoder{Decoder: yamlfile.Decoder{File: name}, data: data}
	f := d.file_()
	if len(d.Errs) > 0 {
		d.Errs.Sort()
		return nil, d.Errs
	}
	return f, nil
}

// LoadFiles parses every file and returns their groups in order. Rule names
// are unique across all the files: a duplicate is an error naming both
// positions. Errors holds the problems of every file, each file's in file
// order; on any error the groups are nil.
func LoadFiles(paths ...string) ([]Group, Errors) {
	var (
		files []*File
		errs  Errors
	)
	for _, p := range paths {
		f, ferrs := ParseFile(p)
		errs = append(errs, ferrs...)
		if f != nil {
			files = append(files, f)
		}
	}
	errs = append(errs, DuplicateRules(files...)...)
	if len(errs) > 0 {
		return nil, errs
	}
	var groups []Group
	for _, f := range files {
		groups = append(groups, f.Groups...)
	}
	return groups, nil
}

// DuplicateRules reports every rule whose name was already used by a rule
// earlier in files, with both positions. (Parse already reports duplicates
// within one file.)
func DuplicateRules(files ...*File) Errors {
	var errs Errors
	seen := map[string]Pos{}
	for _, f := range files {
		for _, g := range f.Groups {
			for _, r := range g.Rules {
				if first, ok := seen[r.Name]; ok && first.File != r.Pos.File {
					errs = append(errs, Error{Pos: r.Pos, Msg: fmt.Sprintf("duplicate rule name %q (first defined at %s)", r.Name, first)})
					continue
				}
				seen[r.Name] = r.Pos
			}
		}
	}
	return errs
}

// RuleCount returns the number of rules of the file.
func (f *File) RuleCount() int {
	n := 0
	for _, g := range f.Groups {
		n += len(g.Rules)
	}
	return n
}
