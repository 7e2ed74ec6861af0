// Package ruletest runs unit tests of rule files, in the spirit of promtool
// test rules: timed input events go through the real rule engine, stepped
// by hand, and the alerts firing at given times are compared with the
// expected ones.
//
// It is not a test of the sources or of delivery: events are given as the
// rules see them (the CEL field names of docs/rules.md).
//
// # Format
//
//	rule_files: [../default.yml]          # relative to the test file
//	tests:
//	  - name: a dump in one statement alerts
//	    start: 2026-01-01T00:00:00Z       # optional, this default
//	    input:
//	      - at: 0s                        # offset from start
//	        repeat: 40                    # optional, default 1
//	        every: 200ms                  # required when repeat > 1
//	        event: {source: statements, role: intruder, relation: public.users, rows: 500, calls: 1}
//	    expect:
//	      - at: 30s
//	        rule: SensitivePaginatedSweep
//	        firing:                       # exactly the alerts of the rule firing then; [] = none
//	          - labels: {table: public.users, role: intruder}      # the exact label set
//	            annotations: {summary: "…"}                        # only those listed are compared
//
// The engine is ticked at every whole second from start; at each tick the
// events due by then are evaluated first, in time order (events of equal
// time in file order). An expectation at `at` is checked after the events
// at or before `at` and the ticks up to it.
package ruletest

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/engine"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// DefaultStart is the start of a test that gives none.
var DefaultStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// File is a parsed test file.
type File struct {
	Path      string
	RuleFiles []string // resolved against the test file's directory
	Tests     []Test
}

// Test is one test case.
type Test struct {
	Name   string
	Start  time.Time
	Input  []Input
	Expect []Expect
	Pos    rulefmt.Pos
}

// Input is a series of identical events.
type Input struct {
	At     time.Duration
	Repeat int
	Every  time.Duration
	Event  model.Event
	Pos    rulefmt.Pos
}

// Expect is what must be firing for a rule at a time.
type Expect struct {
	At     time.Duration
	Rule   string
	Firing []ExpectedAlert
	Pos    rulefmt.Pos
}

// ExpectedAlert is one alert expected to fire: its exact labels, and a
// subset of its annotations.
type ExpectedAlert struct {
	Labels      map[string]string
	Annotations map[string]string
}

// Run runs the tests of every file, printing one line per test and the
// details of each failure on w. ok is false when a test failed; errs holds
// the problems of the files that could not be run (test files or the rule
// files they load), with file:line:col. Files without problems are run
// even when others have some.
func Run(w io.Writer, paths ...string) (ok bool, errs rulefmt.Errors) {
	ok = true
	for _, p := range paths {
		f, ferrs := ParseFile(p)
		if ferrs != nil {
			errs = append(errs, ferrs...)
			continue
		}
		groups, rerrs := rulefmt.LoadFiles(f.RuleFiles...)
		if rerrs != nil {
			errs = append(errs, rerrs...)
			continue
		}
		names := map[string]bool{engine.OverflowRuleName: true}
		for _, g := range groups {
			for _, r := range g.Rules {
				names[r.Name] = true
			}
		}
		bad := false
		for _, t := range f.Tests {
			for _, ex := range t.Expect {
				if !names[ex.Rule] {
					bad = true
					errs = append(errs, rulefmt.Error{Pos: ex.Pos, Msg: fmt.Sprintf("test %q: rule %q is in none of the rule files", t.Name, ex.Rule)})
				}
			}
		}
		if bad {
			continue
		}
		for _, t := range f.Tests {
			failures, err := t.Run(groups)
			if err != nil {
				errs = append(errs, rulefmt.Error{Pos: t.Pos, Msg: fmt.Sprintf("test %q: %v", t.Name, err)})
				ok = false
				continue
			}
			if len(failures) == 0 {
				fmt.Fprintf(w, "PASS %s: %s\n", f.Path, t.Name)
				continue
			}
			ok = false
			fmt.Fprintf(w, "FAIL %s: %s\n", f.Path, t.Name)
			for _, fl := range failures {
				fmt.Fprintf(w, "    %s\n", strings.ReplaceAll(fl, "\n", "\n    "))
			}
		}
	}
	return ok && errs == nil, errs
}

// timed is one input event at its time.
type timed struct {
	at time.Time
	ev model.Event
}

// Run runs the test against the rules and returns its failures, one
// message per expectation not met.
//
// Rules in shadow mode are tested as if they paged: a test is how a rule is
// tuned before it is switched on.
func (t Test) Run(groups []rulefmt.Group) ([]string, error) {
	names := map[string]bool{engine.OverflowRuleName: true}
	paged := make([]rulefmt.Group, len(groups))
	for i, g := range groups {
		paged[i] = rulefmt.Group{Name: g.Name, Pos: g.Pos}
		for _, r := range g.Rules {
			c := *r
			c.Mode = rulefmt.ModePage
			paged[i].Rules = append(paged[i].Rules, &c)
			names[r.Name] = true
		}
	}
	for _, ex := range t.Expect {
		if !names[ex.Rule] {
			return nil, fmt.Errorf("rule %q is in none of the rule files", ex.Rule)
		}
	}
	eng, err := engine.New(paged, engine.Options{})
	if err != nil {
		return nil, err
	}
	var events []timed
	for _, in := range t.Input {
		for i := range in.Repeat {
			at := t.Start.Add(in.At + time.Duration(i)*in.Every)
			ev := in.Event
			if ev.Time.IsZero() {
				ev.Time = at
			}
			events = append(events, timed{at, ev})
		}
	}
	slices.SortStableFunc(events, func(a, b timed) int { return a.at.Compare(b.at) })
	expects := slices.Clone(t.Expect)
	slices.SortStableFunc(expects, func(a, b Expect) int { return cmp.Compare(a.At, b.At) })

	firing := map[string]model.Alert{} // by fingerprint
	apply := func(as []model.Alert) {
		for _, a := range as {
			if a.State == model.StateFiring {
				firing[a.Fingerprint] = a
			} else {
				delete(firing, a.Fingerprint)
			}
		}
	}
	next := 0 // next event
	evalUntil := func(until time.Time) {
		for ; next < len(events) && !events[next].at.After(until); next++ {
			apply(eng.Eval(events[next].at, events[next].ev))
		}
	}
	tick := t.Start // next tick
	var failures []string
	for _, ex := range expects {
		at := t.Start.Add(ex.At)
		for !tick.After(at) {
			evalUntil(tick)
			apply(eng.Tick(tick))
			tick = tick.Add(time.Second)
		}
		evalUntil(at)
		var got []model.Alert
		for _, a := range firing {
			if a.Rule == ex.Rule {
				got = append(got, a)
			}
		}
		if msg := compare(got, ex.Firing); msg != "" {
			failures = append(failures, fmt.Sprintf("%s: at %s, rule %s: %s", ex.Pos, ex.At, ex.Rule, msg))
		}
	}
	return failures, nil
}

// compare matches the alerts firing with the expected ones by label set and
// describes the differences ("" when there are none).
func compare(got []model.Alert, want []ExpectedAlert) string {
	slices.SortFunc(got, func(a, b model.Alert) int { return cmp.Compare(labelString(a.Labels), labelString(b.Labels)) })
	used := make([]bool, len(got))
	var problems []string
	for _, w := range want {
		i := slices.IndexFunc(got, func(a model.Alert) bool { return maps.Equal(a.Labels, w.Labels) })
		if i < 0 || used[i] {
			problems = append(problems, "missing: "+labelString(w.Labels))
			continue
		}
		used[i] = true
		for _, k := range slices.Sorted(maps.Keys(w.Annotations)) {
			if g, ok := got[i].Annotations[k]; !ok || g != w.Annotations[k] {
				problems = append(problems, fmt.Sprintf("alert %s: annotation %s:\n  got  %q\n  want %q",
					labelString(w.Labels), k, g, w.Annotations[k]))
			}
		}
	}
	for i, a := range got {
		if !used[i] {
			problems = append(problems, "unexpected: "+labelString(a.Labels))
		}
	}
	if len(problems) == 0 {
		return ""
	}
	var gotLines []string
	for _, a := range got {
		gotLines = append(gotLines, "  "+labelString(a.Labels))
	}
	if gotLines == nil {
		gotLines = []string{"  (none)"}
	}
	return strings.Join(problems, "\n") + "\nfiring:\n" + strings.Join(gotLines, "\n")
}

func labelString(ls map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(ls)) {
		parts = append(parts, k+"="+strconv.Quote(ls[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// ParseFile reads and parses a test file. Every problem is reported, with
// its file:line:col.
func ParseFile(path string) (*File, rulefmt.Errors) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, rulefmt.Errors{{Pos: rulefmt.Pos{File: path}, Msg: fmt.Sprintf("read rule test file: %v", err)}}
	}
	return Parse(path, data)
}

// Parse parses test file data; name is the file's path, against which
// rule_files are resolved.
func Parse(name string, data []byte) (*File, rulefmt.Errors) {
	root, errs := rulefmt.ParseYAML(name, data)
	if errs != nil {
		return nil, errs
	}
	d := &decoder{file: name}
	f := &File{Path: name}
	if root == nil {
		d.errorf(nil, "empty test file: want rule_files and tests")
		return nil, d.errs
	}
	m := d.mapping(root, "test file", "rule_files", "tests")
	if n, ok := m["rule_files"]; ok {
		for _, s := range d.strings(n, "rule_files") {
			if !filepath.IsAbs(s) {
				s = filepath.Join(filepath.Dir(name), s)
			}
			f.RuleFiles = append(f.RuleFiles, s)
		}
	} else if m != nil {
		d.errorf(root, "rule_files is required")
	}
	if n, ok := m["tests"]; ok {
		for i, tn := range d.seq(n, "tests") {
			f.Tests = append(f.Tests, d.test(fmt.Sprintf("tests[%d]", i), tn))
		}
	} else if m != nil {
		d.errorf(root, "tests is required")
	}
	if len(d.errs) > 0 {
		slices.SortStableFunc(d.errs, func(a, b rulefmt.Error) int {
			return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
		})
		return nil, d.errs
	}
	return f, nil
}

type decoder struct {
	file string
	errs rulefmt.Errors
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	p := rulefmt.Pos{File: d.file}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	d.errs = append(d.errs, rulefmt.Error{Pos: p, Msg: fmt.Sprintf(format, args...)})
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// mapping returns the entries of a mapping by key, reporting unknown and
// duplicate keys. Null values are left out.
func (d *decoder) mapping(n *yaml.Node, where string, known ...string) map[string]*yaml.Node {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: want a mapping (%s)", where, strings.Join(known, ", "))
		return nil
	}
	out := map[string]*yaml.Node{}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		switch {
		case known != nil && !slices.Contains(known, k.Value):
			d.errorf(k, "%s: unknown key %q (known: %s)", where, k.Value, strings.Join(known, ", "))
			continue
		case seen[k.Value]:
			d.errorf(k, "%s: duplicate key %q", where, k.Value)
			continue
		}
		seen[k.Value] = true
		if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
			continue
		}
		out[k.Value] = v
	}
	return out
}

func (d *decoder) seq(n *yaml.Node, where string) []*yaml.Node {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s: want a list", where)
		return nil
	}
	return n.Content
}

func (d *decoder) scalar(n *yaml.Node, where string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, "%s: want a single value", where)
		return "", false
	}
	return n.Value, true
}

func (d *decoder) strings(n *yaml.Node, where string) []string {
	var out []string
	for i, el := range d.seq(n, where) {
		if s, ok := d.scalar(el, fmt.Sprintf("%s[%d]", where, i)); ok {
			out = append(out, s)
		}
	}
	return out
}

func (d *decoder) duration(n *yaml.Node, where string) time.Duration {
	s, ok := d.scalar(n, where)
	if !ok {
		return 0
	}
	v, err := rulefmt.ParseDuration(s)
	if err != nil {
		d.errorf(n, "%s: %q is not a duration (e.g. \"200ms\", \"30s\", \"1h\")", where, s)
	}
	return v
}

func (d *decoder) integer(n *yaml.Node, where string) int64 {
	s, ok := d.scalar(n, where)
	if !ok {
		return 0
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		d.errorf(n, "%s: %q is not an integer", where, s)
	}
	return v
}

func (d *decoder) stringMap(n *yaml.Node, where string) map[string]string {
	m := d.mapping(n, where)
	out := make(map[string]string, len(m))
	for k, v := range m {
		if s, ok := d.scalar(v, where+"."+k); ok {
			out[k] = s
		}
	}
	return out
}

func (d *decoder) test(where string, n *yaml.Node) Test {
	t := Test{Start: DefaultStart, Pos: rulefmt.Pos{File: d.file, Line: n.Line, Column: n.Column}}
	m := d.mapping(n, where, "name", "start", "input", "expect")
	if v, ok := m["name"]; ok {
		t.Name, _ = d.scalar(v, where+".name")
		where = fmt.Sprintf("test %q", t.Name)
	} else if m != nil {
		d.errorf(n, "%s: name is required", where)
	}
	if v, ok := m["start"]; ok {
		if s, ok := d.scalar(v, where+".start"); ok {
			st, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				d.errorf(v, "%s.start: %q is not an RFC 3339 time (2026-01-01T00:00:00Z)", where, s)
			}
			t.Start = st
		}
	}
	if v, ok := m["input"]; ok {
		for i, in := range d.seq(v, where+".input") {
			t.Input = append(t.Input, d.input(fmt.Sprintf("%s.input[%d]", where, i), in))
		}
	}
	if v, ok := m["expect"]; ok {
		for i, ex := range d.seq(v, where+".expect") {
			t.Expect = append(t.Expect, d.expect(fmt.Sprintf("%s.expect[%d]", where, i), ex))
		}
	} else if m != nil {
		d.errorf(n, "%s: expect is required (a test that expects nothing cannot fail)", where)
	}
	return t
}

func (d *decoder) input(where string, n *yaml.Node) Input {
	in := Input{Repeat: 1, Pos: rulefmt.Pos{File: d.file, Line: n.Line, Column: n.Column}}
	m := d.mapping(n, where, "at", "repeat", "every", "event")
	if v, ok := m["at"]; ok {
		in.At = d.duration(v, where+".at")
	}
	if v, ok := m["repeat"]; ok {
		in.Repeat = int(d.integer(v, where+".repeat"))
		if in.Repeat < 1 || in.Repeat > 1_000_000 {
			d.errorf(v, "%s.repeat: want 1 to 1000000, got %d", where, in.Repeat)
			in.Repeat = 1
		}
	}
	if v, ok := m["every"]; ok {
		in.Every = d.duration(v, where+".every")
	}
	if in.Repeat > 1 && in.Every <= 0 {
		d.errorf(n, "%s: every (> 0) is required with repeat", where)
	}
	if v, ok := m["event"]; ok {
		in.Event = d.event(where+".event", v)
	} else if m != nil {
		d.errorf(n, "%s: event is required", where)
	}
	return in
}

// eventKeys are the CEL field names an input event may set (rows_per_call
// is derived from rows and calls).
var eventKeys = []string{"time", "source", "database", "role", "client_addr", "application", "operation",
	"relation", "sensitive_read", "sensitive_referenced", "complete", "rows", "calls", "query_id", "lsn",
	"changed", "message_prefix", "kind", "object", "pid", "running_seconds"}

func (d *decoder) event(where string, n *yaml.Node) model.Event {
	var ev model.Event
	m := d.mapping(n, where, eventKeys...)
	str := func(k string, dst *string) {
		if v, ok := m[k]; ok {
			*dst, _ = d.scalar(v, where+"."+k)
		}
	}
	num := func(k string) int64 {
		if v, ok := m[k]; ok {
			return d.integer(v, where+"."+k)
		}
		return 0
	}
	list := func(k string) []string {
		if v, ok := m[k]; ok {
			return d.strings(v, where+"."+k)
		}
		return nil
	}
	var src string
	str("source", &src)
	ev.Source = model.Source(src)
	str("database", &ev.Database)
	str("role", &ev.Role)
	str("client_addr", &ev.ClientAddr)
	str("application", &ev.Application)
	str("operation", &ev.Operation)
	str("relation", &ev.Relation)
	str("message_prefix", &ev.MessagePrefix)
	str("kind", &ev.Kind)
	str("object", &ev.Object)
	ev.SensitiveRead, ev.SensitiveReferenced, ev.Changed = list("sensitive_read"), list("sensitive_referenced"), list("changed")
	ev.Rows, ev.Calls, ev.QueryID = num("rows"), num("calls"), num("query_id")
	ev.LSN, ev.PID = uint64(num("lsn")), int32(num("pid"))
	ev.Running = time.Duration(num("running_seconds")) * time.Second
	if v, ok := m["complete"]; ok {
		if s, ok := d.scalar(v, where+".complete"); ok {
			b, err := strconv.ParseBool(s)
			if err != nil {
				d.errorf(v, "%s.complete: %q is not true or false", where, s)
			}
			ev.Complete = b
		}
	}
	if v, ok := m["time"]; ok {
		if s, ok := d.scalar(v, where+".time"); ok {
			tm, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				d.errorf(v, "%s.time: %q is not an RFC 3339 time", where, s)
			}
			ev.Time = tm
		}
	}
	return ev
}

func (d *decoder) expect(where string, n *yaml.Node) Expect {
	ex := Expect{Pos: rulefmt.Pos{File: d.file, Line: n.Line, Column: n.Column}}
	m := d.mapping(n, where, "at", "rule", "firing")
	if v, ok := m["at"]; ok {
		ex.At = d.duration(v, where+".at")
	} else if m != nil {
		d.errorf(n, "%s: at is required", where)
	}
	if v, ok := m["rule"]; ok {
		ex.Rule, _ = d.scalar(v, where+".rule")
	} else if m != nil {
		d.errorf(n, "%s: rule is required", where)
	}
	v, ok := m["firing"]
	if !ok {
		if m != nil {
			d.errorf(n, "%s: firing is required ([] when no alert may fire)", where)
		}
		return ex
	}
	ex.Firing = []ExpectedAlert{}
	for i, a := range d.seq(v, where+".firing") {
		w := fmt.Sprintf("%s.firing[%d]", where, i)
		am := d.mapping(a, w, "labels", "annotations")
		ea := ExpectedAlert{Labels: map[string]string{}}
		if lv, ok := am["labels"]; ok {
			ea.Labels = d.stringMap(lv, w+".labels")
		}
		if av, ok := am["annotations"]; ok {
			ea.Annotations = d.stringMap(av, w+".annotations")
		}
		ex.Firing = append(ex.Firing, ea)
	}
	return ex
}
