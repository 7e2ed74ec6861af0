package rulefmt

// The decoder walks the yaml.Node tree itself rather than using yaml.v3's
// Decoder.KnownFields, which stops at the first unknown key and gives no
// columns: every problem of a file is reported at once, each at its place.

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxValues bounds the number of values decoded, so that a few aliases
// repeated many times (a "billion laughs" file) cannot make loading explode.
const maxValues = 100_000

type decoder struct {
	file   string
	data   []byte
	lines  []string // lazily, for positions inside CEL expressions
	errs   Errors
	values int
}

func (d *decoder) errorAt(line, col int, format string, args ...any) {
	d.errs = append(d.errs, Error{Pos: Pos{File: d.file, Line: line, Column: col}, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) errorNode(n *yaml.Node, format string, args ...any) {
	d.errorAt(n.Line, n.Column, format, args...)
}

func (d *decoder) pos(n *yaml.Node) Pos { return Pos{File: d.file, Line: n.Line, Column: n.Column} }

// count counts a decoded value and reports whether decoding may go on.
func (d *decoder) count(n *yaml.Node) bool {
	d.values++
	if d.values == maxValues {
		d.errorNode(n, "more than %d values once aliases are expanded; a rule file needs far fewer", maxValues)
	}
	return d.values < maxValues
}

// entry is a key of a mapping and its value (nil when null).
type entry struct{ key, val *yaml.Node }

// mapping checks that n is a mapping whose keys are among known, reporting
// every other key, and returns the entries by key. Null values are left out,
// as if the key were absent.
func (d *decoder) mapping(n *yaml.Node, where string, known ...string) (map[string]entry, bool) {
	n = resolveAlias(n)
	if !d.count(n) {
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		d.errorNode(n, "%s: want a mapping (%s), got %s", where, strings.Join(known, ", "), describe(n))
		return nil, false
	}
	out := make(map[string]entry, len(n.Content)/2)
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolveAlias(n.Content[i]), resolveAlias(n.Content[i+1])
		switch {
		case k.Kind != yaml.ScalarNode:
			d.errorNode(k, "%s: keys must be names, got %s", where, describe(k))
			continue
		case k.ShortTag() == "!!merge":
			d.errorNode(k, "%s: merge keys (<<) are not supported; write the keys out", where)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorNode(k, "%s: duplicate key %s (first at %d:%d)", where, quote(k.Value), first.Line, first.Column)
			continue
		}
		seen[k.Value] = k
		if !slices.Contains(known, k.Value) {
			d.errorNode(k, "%s: unknown key %s (known: %s)", where, quote(k.Value), strings.Join(known, ", "))
			continue
		}
		if isNull(v) {
			v = nil
		}
		out[k.Value] = entry{key: k, val: v}
	}
	return out, true
}

// sequence checks that n is a list and returns its elements.
func (d *decoder) sequence(n *yaml.Node, where string) ([]*yaml.Node, bool) {
	n = resolveAlias(n)
	if !d.count(n) {
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		d.errorNode(n, "%s: want a list, got %s", where, describe(n))
		return nil, false
	}
	els := make([]*yaml.Node, len(n.Content))
	for i, el := range n.Content {
		els[i] = resolveAlias(el)
	}
	return els, true
}

// scalar returns the text of a string value.
func (d *decoder) scalar(n *yaml.Node, where string) (string, bool) {
	if !d.count(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.errorNode(n, "%s: want a string, got %s", where, describe(n))
		return "", false
	}
	return n.Value, true
}

func (d *decoder) stringList(n *yaml.Node, where string) ([]string, bool) {
	els, ok := d.sequence(n, where)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(els))
	for i, el := range els {
		s, sok := d.scalar(el, fmt.Sprintf("%s[%d]", where, i))
		ok = ok && sok
		out = append(out, s)
	}
	return out, ok
}

func (d *decoder) number(n *yaml.Node, where string) (float64, bool) {
	if !d.count(n) {
		return 0, false
	}
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return f, true
		}
	}
	d.errorNode(n, "%s: want a number, got %s", where, describe(n))
	return 0, false
}

func (d *decoder) integer(n *yaml.Node, where string) (int64, bool) {
	if !d.count(n) {
		return 0, false
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		// Decimal only: yaml.v3 would read 0100 as octal 64.
		if i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 10, 64); err == nil {
			return i, true
		}
	}
	d.errorNode(n, "%s: want a decimal integer, got %s", where, describe(n))
	return 0, false
}

// duration decodes a Go duration ("1h30m", "1.5h") or a Prometheus one
// ("1d", "2w"); negative durations are refused.
func (d *decoder) duration(n *yaml.Node, where string) (time.Duration, bool) {
	if !d.count(n) {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.errorNode(n, `%s: want a duration (e.g. "10m", "1d"), got %s`, where, describe(n))
		return 0, false
	}
	dur, err := ParseDuration(n.Value)
	if err != nil {
		d.errorNode(n, "%s: %v", where, err)
		return 0, false
	}
	return dur, true
}

var promDuration = regexp.MustCompile(`^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$`)

// ParseDuration parses a Go duration ("90s", "1h30m", "1.5h") or a
// Prometheus-style one with day, week and year units ("1d", "2w", "1y" =
// 365d). Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	if dur, err := time.ParseDuration(s); err == nil {
		if dur < 0 {
			return 0, fmt.Errorf("%s is negative", quote(s))
		}
		return dur, nil
	}
	m := promDuration.FindStringSubmatch(s)
	if s == "" || m == nil {
		return 0, fmt.Errorf(`%s is not a duration (e.g. "90s", "10m", "1h30m", "1d")`, quote(s))
	}
	units := []time.Duration{365 * 24 * time.Hour, 7 * 24 * time.Hour, 24 * time.Hour, time.Hour, time.Minute, time.Second, time.Millisecond}
	var total time.Duration
	for i, u := range units {
		if m[i+1] == "" {
			continue
		}
		v, err := strconv.ParseInt(m[i+1], 10, 64)
		if err != nil || v > int64(math.MaxInt64/u) || total > math.MaxInt64-time.Duration(v)*u {
			return 0, fmt.Errorf("%s is too long", quote(s))
		}
		total += time.Duration(v) * u
	}
	return total, nil
}

var (
	ruleName  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)
	labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

func (d *decoder) file_() *File {
	root, ok := d.parseYAML()
	f := &File{Path: d.file}
	if !ok {
		return nil
	}
	if root == nil {
		return f // an empty file holds no rules
	}
	top, ok := d.mapping(root, "rule file", "groups")
	if !ok {
		return nil
	}
	e, ok := top["groups"]
	if !ok || e.val == nil {
		return f
	}
	groups, ok := d.sequence(e.val, "groups")
	if !ok {
		return nil
	}
	seen := map[string]*yaml.Node{}
	for i, gn := range groups {
		g, ok := d.group(i, gn, seen)
		if ok {
			f.Groups = append(f.Groups, g)
		}
	}
	return f
}

func (d *decoder) group(i int, n *yaml.Node, seen map[string]*yaml.Node) (Group, bool) {
	where := fmt.Sprintf("groups[%d]", i)
	if name := peekName(n); name != "" {
		where = "group " + strconv.Quote(name)
	}
	m, ok := d.mapping(n, where, "name", "rules")
	if !ok {
		return Group{}, false
	}
	g := Group{Pos: d.pos(n)}
	if e, ok := m["name"]; ok && e.val != nil {
		g.Name, _ = d.scalar(e.val, where+".name")
		g.Pos = d.pos(e.val)
		if first, dup := seen[g.Name]; dup && g.Name != "" {
			d.errorNode(e.val, "duplicate group name %s (first at %d:%d)", quote(g.Name), first.Line, first.Column)
		}
		seen[g.Name] = e.val
	}
	if g.Name == "" {
		d.errorNode(n, "%s: name is required", where)
	}
	e, ok := m["rules"]
	if !ok || e.val == nil {
		d.errorNode(n, "%s: rules is required (a list of rules)", where)
		return g, false
	}
	rules, ok := d.sequence(e.val, where+".rules")
	if !ok {
		return g, false
	}
	names := map[string]*yaml.Node{}
	for j, rn := range rules {
		if r, ok := d.rule(fmt.Sprintf("%s.rules[%d]", where, j), rn, names); ok {
			g.Rules = append(g.Rules, r)
		}
	}
	return g, true
}

var ruleKeys = []string{"name", "description", "severity", "tags", "mode", "match", "aggregate", "condition", "for", "keep_firing_for", "exceptions", "labels", "annotations"}

func (d *decoder) rule(where string, n *yaml.Node, names map[string]*yaml.Node) (*Rule, bool) {
	index := where
	if name := peekName(n); ruleName.MatchString(name) {
		// Name the rule in every message, including those about its keys.
		where = "rule " + strconv.Quote(name)
	}
	m, ok := d.mapping(n, where, ruleKeys...)
	if !ok {
		return nil, false
	}
	before := len(d.errs)
	r := &Rule{Pos: d.pos(n), Mode: ModePage}
	if e, ok := m["name"]; ok && e.val != nil {
		if s, ok := d.scalar(e.val, where+".name"); ok {
			r.Name, r.Pos = s, d.pos(e.val)
			switch first, dup := names[s]; {
			case !ruleName.MatchString(s):
				d.errorNode(e.val, "%s: name %s must start with a letter and hold only letters, digits and _", index, quote(s))
			case dup:
				d.errorNode(e.val, "duplicate rule name %s (first at %d:%d)", quote(s), first.Line, first.Column)
			default:
				names[s] = e.val
			}
		}
	} else {
		d.errorNode(n, "%s: name is required", where)
	}
	required := func(key string) (*yaml.Node, bool) {
		e, ok := m[key]
		if !ok || e.val == nil {
			d.errorNode(n, "%s: %s is required", where, key)
			return nil, false
		}
		return e.val, true
	}
	if v, ok := required("description"); ok {
		r.Description, _ = d.scalar(v, where+".description")
	}
	if v, ok := required("severity"); ok {
		if s, ok := d.scalar(v, where+".severity"); ok {
			r.Severity = Severity(s)
			if !slices.Contains([]Severity{SeverityCritical, SeverityWarning, SeverityInfo}, r.Severity) {
				d.errorNode(v, "%s: severity %s is not one of critical, warning, info", where, quote(s))
			}
		}
	}
	if e, ok := m["tags"]; ok && e.val != nil {
		r.Tags, _ = d.stringList(e.val, where+".tags")
	}
	if e, ok := m["mode"]; ok && e.val != nil {
		if s, ok := d.scalar(e.val, where+".mode"); ok {
			r.Mode = Mode(s)
			if r.Mode != ModePage && r.Mode != ModeShadow {
				d.errorNode(e.val, "%s: mode %s is not one of page, shadow", where, quote(s))
			}
		}
	}
	if v, ok := required("match"); ok {
		if s, ok := d.scalar(v, where+".match"); ok {
			r.MatchExpr = s
			r.match, _ = d.compileMatch(where, v, s)
		}
	}
	if e, ok := m["aggregate"]; ok && e.val != nil {
		r.Aggregate = d.aggregate(where+".aggregate", e.val)
	}
	if e, ok := m["condition"]; ok && e.val != nil {
		r.Condition = d.condition(where+".condition", e.val, r.Aggregate != nil)
	} else if r.Aggregate != nil {
		d.errorNode(n, "%s: condition is required with an aggregate (threshold, baseline or first_seen)", where)
	}
	if e, ok := m["for"]; ok && e.val != nil {
		r.For, _ = d.duration(e.val, where+".for")
	}
	if e, ok := m["keep_firing_for"]; ok && e.val != nil {
		r.KeepFiringFor, _ = d.duration(e.val, where+".keep_firing_for")
	}
	if e, ok := m["exceptions"]; ok && e.val != nil {
		if els, ok := d.sequence(e.val, where+".exceptions"); ok {
			for i, el := range els {
				if x, ok := d.exception(fmt.Sprintf("%s.exceptions[%d]", where, i), el); ok {
					r.Exceptions = append(r.Exceptions, x)
				}
			}
		}
	}
	if e, ok := m["labels"]; ok && e.val != nil {
		r.Labels, r.labels = d.templates(where+".labels", e.val, true)
	}
	if e, ok := m["annotations"]; ok && e.val != nil {
		r.Annotations, r.annotations = d.templates(where+".annotations", e.val, false)
	}
	return r, len(d.errs) == before
}

func (d *decoder) aggregate(where string, n *yaml.Node) *Aggregate {
	m, ok := d.mapping(n, where, "function", "field", "window", "by")
	if !ok {
		return nil
	}
	a := &Aggregate{}
	e, ok := m["function"]
	if !ok || e.val == nil {
		d.errorNode(n, "%s: function is required (count, sum, max, count_distinct)", where)
	} else if s, ok := d.scalar(e.val, where+".function"); ok {
		a.Function = AggregateFunction(s)
		if !slices.Contains([]AggregateFunction{AggCount, AggSum, AggMax, AggCountDistinct}, a.Function) {
			d.errorNode(e.val, "%s: function %s is not one of count, sum, max, count_distinct", where, quote(s))
			a.Function = ""
		}
	}
	fe, hasField := m["field"]
	hasField = hasField && fe.val != nil
	switch {
	case a.Function == AggCount && hasField:
		d.errorNode(fe.key, "%s: count takes no field", where)
	case (a.Function == AggSum || a.Function == AggMax) && !hasField:
		d.errorNode(n, "%s: %s needs a numeric field (%s)", where, a.Function, strings.Join(numericFields(), ", "))
	case a.Function == AggCountDistinct && !hasField:
		d.errorNode(n, "%s: count_distinct needs a field (%s)", where, strings.Join(labelFields(), ", "))
	case hasField:
		if s, ok := d.scalar(fe.val, where+".field"); ok {
			a.Field = s
			if a.Function == AggCountDistinct {
				d.checkField(fe.val, where+".field", s, labelFields())
			} else if a.Function != "" {
				d.checkField(fe.val, where+".field", s, numericFields())
			}
		}
	}
	if e, ok := m["window"]; !ok || e.val == nil {
		d.errorNode(n, "%s: window is required (e.g. 10m)", where)
	} else if w, ok := d.duration(e.val, where+".window"); ok {
		if w <= 0 {
			d.errorNode(e.val, "%s.window: must be more than 0", where)
		}
		a.Window = w
	}
	if e, ok := m["by"]; ok && e.val != nil {
		a.By = d.fieldList(where+".by", e.val)
	}
	return a
}

// fieldList decodes a list of distinct event field names usable as labels.
func (d *decoder) fieldList(where string, n *yaml.Node) []string {
	els, ok := d.sequence(n, where)
	if !ok {
		return nil
	}
	var out []string
	for i, el := range els {
		w := fmt.Sprintf("%s[%d]", where, i)
		if s, ok := d.scalar(el, w); ok && d.checkField(el, w, s, labelFields()) {
			if slices.Contains(out, s) {
				d.errorNode(el, "%s: %s is listed twice", w, quote(s))
				continue
			}
			out = append(out, s)
		}
	}
	return out
}

// checkField reports whether name is one of allowed, with an error if not.
func (d *decoder) checkField(n *yaml.Node, where, name string, allowed []string) bool {
	if slices.Contains(allowed, name) {
		return true
	}
	if _, isField := fieldByName[name]; isField {
		d.errorNode(n, "%s: event field %s cannot be used here (use one of %s)", where, quote(name), strings.Join(allowed, ", "))
	} else {
		d.errorNode(n, "%s: %s is not an event field (use one of %s)", where, quote(name), strings.Join(allowed, ", "))
	}
	return false
}

func (d *decoder) condition(where string, n *yaml.Node, aggregated bool) Condition {
	m, ok := d.mapping(n, where, "threshold", "baseline", "first_seen")
	if !ok {
		return Condition{}
	}
	var c Condition
	if len(m) != 1 {
		d.errorNode(n, "%s: want exactly one of threshold, baseline, first_seen, got %d", where, len(m))
	}
	if e, ok := m["threshold"]; ok && e.val != nil {
		c.Threshold = d.threshold(where+".threshold", e.val, aggregated)
	}
	if e, ok := m["baseline"]; ok && e.val != nil {
		if !aggregated {
			d.errorNode(e.key, "%s: baseline learns the usual value of an aggregate: add an aggregate", where)
		}
		c.Baseline = d.baseline(where+".baseline", e.val)
	}
	if e, ok := m["first_seen"]; ok && e.val != nil {
		if aggregated {
			d.errorNode(e.key, "%s: first_seen fires on a new key, not on a value: remove the aggregate", where)
		}
		c.FirstSeen = d.firstSeen(where+".first_seen", e.val)
	}
	return c
}

var ops = []Op{OpGT, OpGE, OpLT, OpLE, OpEQ, OpNE}

func (d *decoder) threshold(where string, n *yaml.Node, aggregated bool) *Threshold {
	m, ok := d.mapping(n, where, "field", "op", "value")
	if !ok {
		return nil
	}
	t := &Threshold{}
	if e, ok := m["op"]; !ok || e.val == nil {
		d.errorNode(n, "%s: op is required (> >= < <= == !=)", where)
	} else if s, ok := d.scalar(e.val, where+".op"); ok {
		t.Op = Op(s)
		if !slices.Contains(ops, t.Op) {
			d.errorNode(e.val, "%s: op %s is not one of > >= < <= == !=", where, quote(s))
		}
	}
	if e, ok := m["value"]; !ok || e.val == nil {
		d.errorNode(n, "%s: value is required", where)
	} else {
		t.Value, _ = d.number(e.val, where+".value")
	}
	e, hasField := m["field"]
	switch {
	case aggregated && hasField && e.val != nil:
		d.errorNode(e.key, "%s: field is only for a rule without aggregate; the threshold applies to the aggregate", where)
	case !aggregated && (!hasField || e.val == nil):
		d.errorNode(n, "%s: without an aggregate, field names the event field compared (%s)", where, strings.Join(numericFields(), ", "))
	case !aggregated:
		if s, ok := d.scalar(e.val, where+".field"); ok && d.checkField(e.val, where+".field", s, numericFields()) {
			t.Field = s
		}
	}
	return t
}

func (d *decoder) baseline(where string, n *yaml.Node) *Baseline {
	m, ok := d.mapping(n, where, "learn_for", "z_score", "floor")
	if !ok {
		return nil
	}
	b := &Baseline{}
	if e, ok := m["learn_for"]; !ok || e.val == nil {
		d.errorNode(n, "%s: learn_for is required (e.g. 7d)", where)
	} else if v, ok := d.duration(e.val, where+".learn_for"); ok {
		if v <= 0 {
			d.errorNode(e.val, "%s.learn_for: must be more than 0", where)
		}
		b.LearnFor = v
	}
	if e, ok := m["z_score"]; !ok || e.val == nil {
		d.errorNode(n, "%s: z_score is required (e.g. 4)", where)
	} else if v, ok := d.number(e.val, where+".z_score"); ok {
		if v <= 0 {
			d.errorNode(e.val, "%s.z_score: must be more than 0", where)
		}
		b.ZScore = v
	}
	if e, ok := m["floor"]; ok && e.val != nil {
		if v, ok := d.number(e.val, where+".floor"); ok {
			if v < 0 {
				d.errorNode(e.val, "%s.floor: must not be negative", where)
			}
			b.Floor = v
		}
	}
	return b
}

func (d *decoder) firstSeen(where string, n *yaml.Node) *FirstSeen {
	m, ok := d.mapping(n, where, "key", "learn_for", "forget_after")
	if !ok {
		return nil
	}
	f := &FirstSeen{}
	if e, ok := m["key"]; !ok || e.val == nil {
		d.errorNode(n, "%s: key is required (a list of event fields)", where)
	} else {
		f.Key = d.fieldList(where+".key", e.val)
		if len(f.Key) == 0 && resolveAlias(e.val).Kind == yaml.SequenceNode {
			d.errorNode(e.val, "%s.key: list at least one event field", where)
		}
	}
	if e, ok := m["learn_for"]; ok && e.val != nil {
		f.LearnFor, _ = d.duration(e.val, where+".learn_for")
	}
	if e, ok := m["forget_after"]; ok && e.val != nil {
		if v, ok := d.duration(e.val, where+".forget_after"); ok {
			if v <= f.LearnFor {
				d.errorNode(e.val, "%s.forget_after: must be longer than learn_for", where)
			}
			f.ForgetAfter = v
		}
	}
	return f
}

var exceptionKeys = []string{"role", "application", "client_cidr", "queryid", "relation", "database", "expires"}

func (d *decoder) exception(where string, n *yaml.Node) (Exception, bool) {
	m, ok := d.mapping(n, where, exceptionKeys...)
	if !ok {
		return Exception{}, false
	}
	before := len(d.errs)
	x := Exception{Pos: d.pos(n)}
	str := func(key string, dst *string) {
		if e, ok := m[key]; ok && e.val != nil {
			if s, ok := d.scalar(e.val, where+"."+key); ok {
				if s == "" {
					d.errorNode(e.val, "%s.%s: must not be empty (leave the key out to match any)", where, key)
				}
				*dst = s
			}
		}
	}
	str("role", &x.Role)
	str("application", &x.Application)
	str("relation", &x.Relation)
	str("database", &x.Database)
	if e, ok := m["client_cidr"]; ok && e.val != nil {
		if s, ok := d.scalar(e.val, where+".client_cidr"); ok {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				if a, aerr := netip.ParseAddr(s); aerr == nil {
					p = netip.PrefixFrom(a, a.BitLen())
					err = nil
				}
			}
			if err != nil {
				d.errorNode(e.val, "%s.client_cidr: %s is not a CIDR prefix (e.g. 10.20.0.0/16) or an address", where, quote(s))
			} else if p.Masked() != p {
				d.errorNode(e.val, "%s.client_cidr: %s has host bits set; did you mean %s?", where, quote(s), p.Masked())
			} else {
				x.ClientCIDR = p
			}
		}
	}
	if e, ok := m["queryid"]; ok && e.val != nil {
		x.QueryID, x.HasQueryID = d.integer(e.val, where+".queryid")
	}
	if e, ok := m["expires"]; ok && e.val != nil {
		if s, ok := d.scalar(e.val, where+".expires"); ok {
			t, err := parseExpires(s)
			if err != nil {
				d.errorNode(e.val, "%s.expires: %v", where, err)
			}
			x.Expires = t
		}
	}
	matchers := 0
	for _, k := range exceptionKeys {
		if _, ok := m[k]; ok && k != "expires" {
			matchers++
		}
	}
	if matchers == 0 {
		d.errorNode(n, "%s: an exception needs at least one of role, application, client_cidr, queryid, relation, database; an empty one would silence the rule", where)
	}
	return x, len(d.errs) == before
}

// parseExpires reads a date (valid through that day, UTC) or an RFC 3339
// time.
func parseExpires(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.AddDate(0, 0, 1), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, errors.New(quote(s) + " is not a date (2027-01-31) or an RFC 3339 time (2027-01-31T18:00:00Z)")
}

// peekName returns the value of the name key of mapping n, or "".
func peekName(n *yaml.Node) string {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolveAlias(n.Content[i]), resolveAlias(n.Content[i+1])
		if k.Kind == yaml.ScalarNode && k.Value == "name" && v.Kind == yaml.ScalarNode {
			return v.Value
		}
	}
	return ""
}
