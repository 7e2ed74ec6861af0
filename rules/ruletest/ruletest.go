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

	"github.com/pgtripwire/pgtripwire/internal/yamlfile"
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
	root, errs := yamlfile.Parse(name, data, "rule test file")
	d := &decoder{Decoder: yamlfile.Decoder{File: name, Errs: errs}}
	f := &File{Path: name}
	switch {
	case root != nil:
		d.file(f, root)
	case errs == nil:
		d.ErrorAt(0, 0, "empty test file: want rule_files and tests")
	}
	if len(d.Errs) > 0 {
		d.Errs.Sort()
		return nil, d.Errs
	}
	return f, nil
}

// decoder decodes a test file with the YAML front end of rule files.
type decoder struct{ yamlfile.Decoder }

func (d *decoder) file(f *File, root *yaml.Node) {
	m, ok := d.Mapping(root, "test file", "rule_files", "tests")
	if !ok {
		return
	}
	if v := m.Value("rule_files"); v != nil {
		paths, _ := d.Strings(v, "rule_files")
		for _, s := range paths {
			if !filepath.IsAbs(s) {
				s = filepath.Join(filepath.Dir(f.Path), s)
			}
			f.RuleFiles = append(f.RuleFiles, s)
		}
	} else {
		d.Errorf(root, "rule_files is required")
	}
	if v := m.Value("tests"); v != nil {
		tests, _ := d.Sequence(v, "tests")
		for i, tn := range tests {
			f.Tests = append(f.Tests, d.test(fmt.Sprintf("tests[%d]", i), tn))
		}
	} else {
		d.Errorf(root, "tests is required")
	}
}

// timestamp decodes an RFC 3339 time.
func (d *decoder) timestamp(n *yaml.Node, where string) (time.Time, bool) {
	s, ok := d.String(n, where)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		d.Errorf(n, "%s: %s is not an RFC 3339 time (2026-01-01T00:00:00Z)", where, yamlfile.Quote(s))
		return time.Time{}, false
	}
	return t, true
}

func (d *decoder) test(where string, n *yaml.Node) Test {
	t := Test{Start: DefaultStart, Pos: d.Pos(n)}
	m, ok := d.Mapping(n, where, "name", "start", "input", "expect")
	if !ok {
		return t
	}
	if v := m.Value("name"); v != nil {
		t.Name, _ = d.String(v, where+".name")
		where = fmt.Sprintf("test %q", t.Name)
	} else {
		d.Errorf(n, "%s: name is required", where)
	}
	if v := m.Value("start"); v != nil {
		if st, ok := d.timestamp(v, where+".start"); ok {
			t.Start = st
		}
	}
	if v := m.Value("input"); v != nil {
		inputs, _ := d.Sequence(v, where+".input")
		for i, in := range inputs {
			t.Input = append(t.Input, d.input(fmt.Sprintf("%s.input[%d]", where, i), in))
		}
	}
	if v := m.Value("expect"); v != nil {
		expects, _ := d.Sequence(v, where+".expect")
		for i, ex := range expects {
			t.Expect = append(t.Expect, d.expect(fmt.Sprintf("%s.expect[%d]", where, i), ex))
		}
	} else {
		d.Errorf(n, "%s: expect is required (a test that expects nothing cannot fail)", where)
	}
	return t
}

func (d *decoder) input(where string, n *yaml.Node) Input {
	in := Input{Repeat: 1, Pos: d.Pos(n)}
	m, ok := d.Mapping(n, where, "at", "repeat", "every", "event")
	if !ok {
		return in
	}
	if v := m.Value("at"); v != nil {
		in.At, _ = d.PromDuration(v, where+".at")
	}
	if v := m.Value("repeat"); v != nil {
		if r, ok := d.Int(v, where+".repeat"); ok && (r < 1 || r > 1_000_000) {
			d.Errorf(v, "%s.repeat: want 1 to 1000000, got %d", where, r)
		} else if ok {
			in.Repeat = int(r)
		}
	}
	if v := m.Value("every"); v != nil {
		in.Every, _ = d.PromDuration(v, where+".every")
	}
	if in.Repeat > 1 && in.Every <= 0 {
		d.Errorf(n, "%s: every (> 0) is required with repeat", where)
	}
	if v := m.Value("event"); v != nil {
		in.Event = d.event(where+".event", v)
	} else {
		d.Errorf(n, "%s: event is required", where)
	}
	return in
}

// eventKeys are the CEL field names an input event may set (rows_per_call
// is derived from rows and calls).
var eventKeys = []string{"time", "source", "database", "role", "application_role", "client_addr", "application", "operation",
	"relation", "sensitive_read", "sensitive_referenced", "complete", "rows", "calls", "rows_read", "access",
	"shapes", "query_id", "lsn", "changed", "message_prefix", "kind", "object", "pid", "running_seconds"}

func (d *decoder) event(where string, n *yaml.Node) model.Event {
	var ev model.Event
	m, _ := d.Mapping(n, where, eventKeys...)
	str := func(k string, dst *string) {
		if v := m.Value(k); v != nil {
			*dst, _ = d.String(v, where+"."+k)
		}
	}
	num := func(k string) int64 {
		if v := m.Value(k); v != nil {
			i, _ := d.Int(v, where+"."+k)
			return i
		}
		return 0
	}
	list := func(k string) []string {
		if v := m.Value(k); v != nil {
			l, _ := d.Strings(v, where+"."+k)
			return l
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
	str("access", &ev.Access)
	ev.Shapes = list("shapes")
	ev.SensitiveRead, ev.SensitiveReferenced, ev.Changed = list("sensitive_read"), list("sensitive_referenced"), list("changed")
	ev.Rows, ev.Calls, ev.QueryID = num("rows"), num("calls"), num("query_id")
	ev.RowsRead = num("rows_read")
	ev.LSN, ev.PID = uint64(num("lsn")), int32(num("pid"))
	ev.Running = time.Duration(num("running_seconds")) * time.Second
	if v := m.Value("complete"); v != nil {
		ev.Complete, _ = d.Bool(v, where+".complete")
	}
	if v := m.Value("application_role"); v != nil {
		ev.ApplicationRole, _ = d.Bool(v, where+".application_role")
	}
	if v := m.Value("time"); v != nil {
		ev.Time, _ = d.timestamp(v, where+".time")
	}
	return ev
}

func (d *decoder) expect(where string, n *yaml.Node) Expect {
	ex := Expect{Pos: d.Pos(n)}
	m, ok := d.Mapping(n, where, "at", "rule", "firing")
	if !ok {
		return ex
	}
	if v := m.Value("at"); v != nil {
		ex.At, _ = d.PromDuration(v, where+".at")
	} else {
		d.Errorf(n, "%s: at is required", where)
	}
	if v := m.Value("rule"); v != nil {
		ex.Rule, _ = d.String(v, where+".rule")
	} else {
		d.Errorf(n, "%s: rule is required", where)
	}
	v := m.Value("firing")
	if v == nil {
		d.Errorf(n, "%s: firing is required ([] when no alert may fire)", where)
		return ex
	}
	ex.Firing = []ExpectedAlert{}
	alerts, _ := d.Sequence(v, where+".firing")
	for i, a := range alerts {
		w := fmt.Sprintf("%s.firing[%d]", where, i)
		am, _ := d.Mapping(a, w, "labels", "annotations")
		ea := ExpectedAlert{Labels: map[string]string{}}
		if lv := am.Value("labels"); lv != nil {
			ea.Labels, _ = d.StringMap(lv, w+".labels")
		}
		if av := am.Value("annotations"); av != nil {
			ea.Annotations, _ = d.StringMap(av, w+".annotations")
		}
		ex.Firing = append(ex.Firing, ea)
	}
	return ex
}
