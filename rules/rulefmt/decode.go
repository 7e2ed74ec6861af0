package rulefmt

// The decoder walks the yaml.Node tree itself rather than using yaml.v3's
// Decoder.KnownFields, which stops at the first unknown key and gives no
// columns: every problem of a file is reported at once, each at its place.
// Parsing, strict mappings and scalars are the shared YAML front end's
// (internal/yamlfile), so that rule and config files read and refuse YAML
// alike.

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pgtripwire/pgtripwire/internal/yamlfile"
)

type decoder struct {
	yamlfile.Decoder
	data  []byte
	lines []string // lazily, for positions inside CEL expressions
}

// The front end under the names cel.go and template.go use.

func (d *decoder) errorAt(line, col int, format string, args ...any) {
	d.ErrorAt(line, col, format, args...)
}

func (d *decoder) errorNode(n *yaml.Node, format string, args ...any) { d.Errorf(n, format, args...) }

func (d *decoder) scalar(n *yaml.Node, where string) (string, bool) { return d.String(n, where) }

// count reports whether decoding may go on past n. It always may:
// yamlfile.Parse has bounded what aliases expand to before decoding starts.
func (d *decoder) count(*yaml.Node) bool { return true }

func resolveAlias(n *yaml.Node) *yaml.Node { return yamlfile.Resolve(n) }

func describe(n *yaml.Node) string { return yamlfile.Describe(n) }

// quote quotes a value from the file for a message, with any secret in it
// redacted.
func quote(s string) string { return yamlfile.Quote(s) }

func sourceLines(data []byte) []string { return yamlfile.Lines(data) }

// ParseDuration parses a Go duration ("90s", "1h30m", "1.5h") or a
// Prometheus-style one with day, week and year units ("1d", "2w", "1y" =
// 365d), as rule files write them. Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) { return yamlfile.ParsePromDuration(s) }

var (
	ruleName  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)
	labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

func (d *decoder) file_() *File {
	root, errs := yamlfile.Parse(d.File, d.data, "rule file")
	d.Errs = append(d.Errs, errs...)
	f := &File{Path: d.File}
	if root == nil {
		if len(errs) == 0 {
			// A file emptied while a tool rewrites it (config management truncates
			// first) must not be taken for a pack without rules: every rule would be
			// dropped and its firing alerts resolved. An empty pack is said so.
			d.ErrorAt(1, 1, "the file is empty: a rule file with no rules on purpose says so with `groups: []`")
		}
		return f
	}
	top, ok := d.Mapping(root, "rule file", "groups")
	if !ok {
		return nil
	}
	gs := top.Value("groups")
	if gs == nil {
		d.ErrorAt(root.Line, root.Column, "rule file: groups is missing: a rule file with no rules on purpose says so with `groups: []`")
		return f
	}
	groups, ok := d.Sequence(gs, "groups")
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
	m, ok := d.Mapping(n, where, "name", "rules")
	if !ok {
		return Group{}, false
	}
	g := Group{Pos: d.Pos(n)}
	if v := m.Value("name"); v != nil {
		g.Name, _ = d.String(v, where+".name")
		g.Pos = d.Pos(v)
		if first, dup := seen[g.Name]; dup && g.Name != "" {
			d.Errorf(v, "duplicate group name %s (first at %d:%d)", quote(g.Name), first.Line, first.Column)
		}
		seen[g.Name] = v
	}
	if g.Name == "" {
		d.Errorf(n, "%s: name is required", where)
	}
	rv := m.Value("rules")
	if rv == nil {
		d.Errorf(n, "%s: rules is required (a list of rules)", where)
		return g, false
	}
	rules, ok := d.Sequence(rv, where+".rules")
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

var ruleKeys = []string{"name", "description", "severity", "tags", "mode", "match", "aggregate", "condition", "for", "keep_firing_for", "exceptions", "labels", "annotations", "precise", "response"}

func (d *decoder) rule(where string, n *yaml.Node, names map[string]*yaml.Node) (*Rule, bool) {
	index := where
	if name := peekName(n); ruleName.MatchString(name) {
		// Name the rule in every message, including those about its keys.
		where = "rule " + strconv.Quote(name)
	}
	m, ok := d.Mapping(n, where, ruleKeys...)
	if !ok {
		return nil, false
	}
	before := len(d.Errs)
	r := &Rule{Pos: d.Pos(n), Mode: ModePage}
	if v := m.Value("name"); v != nil {
		if s, ok := d.String(v, where+".name"); ok {
			r.Name, r.Pos = s, d.Pos(v)
			switch first, dup := names[s]; {
			case !ruleName.MatchString(s):
				d.Errorf(v, "%s: name %s must start with a letter and hold only letters, digits and _", index, quote(s))
			case dup:
				d.Errorf(v, "duplicate rule name %s (first at %d:%d)", quote(s), first.Line, first.Column)
			default:
				names[s] = v
			}
		}
	} else {
		d.Errorf(n, "%s: name is required", where)
	}
	required := func(key string) (*yaml.Node, bool) {
		v := m.Value(key)
		if v == nil {
			d.Errorf(n, "%s: %s is required", where, key)
		}
		return v, v != nil
	}
	if v, ok := required("description"); ok {
		r.Description, _ = d.String(v, where+".description")
	}
	if v, ok := required("severity"); ok {
		if s, ok := d.String(v, where+".severity"); ok {
			r.Severity = Severity(s)
			if !slices.Contains([]Severity{SeverityCritical, SeverityWarning, SeverityInfo}, r.Severity) {
				d.Errorf(v, "%s: severity %s is not one of critical, warning, info", where, quote(s))
			}
		}
	}
	if v := m.Value("tags"); v != nil {
		r.Tags, _ = d.Strings(v, where+".tags")
	}
	if v := m.Value("mode"); v != nil {
		if s, ok := d.String(v, where+".mode"); ok {
			r.Mode = Mode(s)
			if r.Mode != ModePage && r.Mode != ModeShadow {
				d.Errorf(v, "%s: mode %s is not one of page, shadow", where, quote(s))
			}
		}
	}
	if v, ok := required("match"); ok {
		if s, ok := d.String(v, where+".match"); ok {
			r.MatchExpr = s
			r.match, _ = d.compileMatch(where, v, s)
		}
	}
	if v := m.Value("aggregate"); v != nil {
		r.Aggregate = d.aggregate(where+".aggregate", v)
	}
	if v := m.Value("condition"); v != nil {
		r.Condition = d.condition(where+".condition", v, r.Aggregate != nil)
	} else if r.Aggregate != nil {
		d.Errorf(n, "%s: condition is required with an aggregate (threshold, baseline or first_seen)", where)
	}
	if v := m.Value("for"); v != nil {
		r.For, _ = d.PromDuration(v, where+".for")
	}
	if v := m.Value("keep_firing_for"); v != nil {
		r.KeepFiringFor, _ = d.PromDuration(v, where+".keep_firing_for")
	}
	if v := m.Value("exceptions"); v != nil {
		if els, ok := d.Sequence(v, where+".exceptions"); ok {
			for i, el := range els {
				if x, ok := d.exception(fmt.Sprintf("%s.exceptions[%d]", where, i), el); ok {
					r.Exceptions = append(r.Exceptions, x)
				}
			}
		}
	}
	if v := m.Value("labels"); v != nil {
		r.Labels, r.labels = d.templates(where+".labels", v, true)
	}
	if v := m.Value("annotations"); v != nil {
		r.Annotations, r.annotations = d.templates(where+".annotations", v, false)
	}
	if v := m.Value("precise"); v != nil {
		r.Precise, _ = d.Bool(v, where+".precise")
	}
	if v := m.Value("response"); v != nil {
		r.Response = d.response(where+".response", v, r.Precise)
	}
	return r, len(d.Errs) == before
}

// response decodes a rule's automatic response; precise is the rule's claim that it
// cannot be wrong, without which no response is allowed.
func (d *decoder) response(where string, n *yaml.Node, precise bool) *Response {
	m, ok := d.Mapping(n, where, "terminate")
	if !ok {
		return nil
	}
	r := &Response{}
	if v := m.Value("terminate"); v != nil {
		r.Terminate, _ = d.Bool(v, where+".terminate")
	}
	switch {
	case !r.Terminate:
		d.Errorf(n, "%s: names no action (terminate: true is the one there is)", where)
	case !precise:
		d.Errorf(n, "%s: only a rule marked precise: true may act on its own; an automatic response to a rule that can be wrong "+
			"terminates legitimate work (use `pgtripwire respond` for the others)", where)
	}
	return r
}

func (d *decoder) aggregate(where string, n *yaml.Node) *Aggregate {
	m, ok := d.Mapping(n, where, "function", "field", "window", "by")
	if !ok {
		return nil
	}
	a := &Aggregate{}
	if v := m.Value("function"); v == nil {
		d.Errorf(n, "%s: function is required (count, sum, max, count_distinct)", where)
	} else if s, ok := d.String(v, where+".function"); ok {
		a.Function = AggregateFunction(s)
		if !slices.Contains([]AggregateFunction{AggCount, AggSum, AggMax, AggCountDistinct}, a.Function) {
			d.Errorf(v, "%s: function %s is not one of count, sum, max, count_distinct", where, quote(s))
			a.Function = ""
		}
	}
	fe, _ := m.Get("field")
	hasField := fe.Value != nil
	switch {
	case a.Function == AggCount && hasField:
		d.Errorf(fe.Key, "%s: count takes no field", where)
	case (a.Function == AggSum || a.Function == AggMax) && !hasField:
		d.Errorf(n, "%s: %s needs a numeric field (%s)", where, a.Function, strings.Join(numericFields(), ", "))
	case a.Function == AggCountDistinct && !hasField:
		d.Errorf(n, "%s: count_distinct needs a field (%s)", where, strings.Join(labelFields(), ", "))
	case hasField:
		if s, ok := d.String(fe.Value, where+".field"); ok {
			a.Field = s
			if a.Function == AggCountDistinct {
				d.checkField(fe.Value, where+".field", s, labelFields())
			} else if a.Function != "" {
				d.checkField(fe.Value, where+".field", s, numericFields())
			}
		}
	}
	if v := m.Value("window"); v == nil {
		d.Errorf(n, "%s: window is required (e.g. 10m)", where)
	} else if w, ok := d.PromDuration(v, where+".window"); ok {
		if w <= 0 {
			d.Errorf(v, "%s.window: must be more than 0", where)
		}
		a.Window = w
	}
	if v := m.Value("by"); v != nil {
		a.By = d.fieldList(where+".by", v)
	}
	return a
}

// fieldList decodes a list of distinct event field names usable as labels.
func (d *decoder) fieldList(where string, n *yaml.Node) []string {
	els, ok := d.Sequence(n, where)
	if !ok {
		return nil
	}
	var out []string
	for i, el := range els {
		w := fmt.Sprintf("%s[%d]", where, i)
		if s, ok := d.String(el, w); ok && d.checkField(el, w, s, labelFields()) {
			if slices.Contains(out, s) {
				d.Errorf(el, "%s: %s is listed twice", w, quote(s))
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
		d.Errorf(n, "%s: event field %s cannot be used here (use one of %s)", where, quote(name), strings.Join(allowed, ", "))
	} else {
		d.Errorf(n, "%s: %s is not an event field (use one of %s)", where, quote(name), strings.Join(allowed, ", "))
	}
	return false
}

func (d *decoder) condition(where string, n *yaml.Node, aggregated bool) Condition {
	m, ok := d.Mapping(n, where, "threshold", "baseline", "first_seen")
	if !ok {
		return Condition{}
	}
	var c Condition
	fs, _ := m.Get("first_seen")
	_, hasThreshold := m.Get("threshold")
	// first_seen and a threshold go together with an aggregate: the threshold
	// applies to the aggregate of the events whose key is new.
	newKeys := fs.Value != nil && hasThreshold && len(m) == 2
	if len(m) != 1 && !newKeys {
		d.Errorf(n, "%s: want exactly one of threshold, baseline, first_seen (or first_seen with a threshold), got %d", where, len(m))
	}
	if v := m.Value("threshold"); v != nil {
		if newKeys && !aggregated {
			d.Errorf(n, "%s: a threshold beside first_seen applies to the aggregate of the events of new keys: add an aggregate", where)
		}
		c.Threshold = d.threshold(where+".threshold", v, aggregated || newKeys)
	}
	if e, _ := m.Get("baseline"); e.Value != nil {
		if !aggregated {
			d.Errorf(e.Key, "%s: baseline learns the usual value of an aggregate: add an aggregate", where)
		}
		c.Baseline = d.baseline(where+".baseline", e.Value)
	}
	if fs.Value != nil {
		if aggregated && len(m) == 1 {
			d.Errorf(fs.Key, "%s: first_seen with an aggregate counts the events of new keys: add a threshold on that count, or remove the aggregate", where)
		}
		c.FirstSeen = d.firstSeen(where+".first_seen", fs.Value)
	}
	return c
}

var ops = []Op{OpGT, OpGE, OpLT, OpLE, OpEQ, OpNE}

func (d *decoder) threshold(where string, n *yaml.Node, aggregated bool) *Threshold {
	m, ok := d.Mapping(n, where, "field", "op", "value")
	if !ok {
		return nil
	}
	t := &Threshold{}
	if v := m.Value("op"); v == nil {
		d.Errorf(n, "%s: op is required (> >= < <= == !=)", where)
	} else if s, ok := d.String(v, where+".op"); ok {
		t.Op = Op(s)
		if !slices.Contains(ops, t.Op) {
			d.Errorf(v, "%s: op %s is not one of > >= < <= == !=", where, quote(s))
		}
	}
	if v := m.Value("value"); v == nil {
		d.Errorf(n, "%s: value is required", where)
	} else {
		t.Value, _ = d.Number(v, where+".value")
	}
	e, _ := m.Get("field")
	switch {
	case aggregated && e.Value != nil:
		d.Errorf(e.Key, "%s: field is only for a rule without aggregate; the threshold applies to the aggregate", where)
	case !aggregated && e.Value == nil:
		d.Errorf(n, "%s: without an aggregate, field names the event field compared (%s)", where, strings.Join(numericFields(), ", "))
	case !aggregated:
		if s, ok := d.String(e.Value, where+".field"); ok && d.checkField(e.Value, where+".field", s, numericFields()) {
			t.Field = s
		}
	}
	return t
}

func (d *decoder) baseline(where string, n *yaml.Node) *Baseline {
	m, ok := d.Mapping(n, where, "learn_for", "z_score", "floor")
	if !ok {
		return nil
	}
	b := &Baseline{}
	if v := m.Value("learn_for"); v == nil {
		d.Errorf(n, "%s: learn_for is required (e.g. 7d)", where)
	} else if lf, ok := d.PromDuration(v, where+".learn_for"); ok {
		if lf <= 0 {
			d.Errorf(v, "%s.learn_for: must be more than 0", where)
		}
		b.LearnFor = lf
	}
	if v := m.Value("z_score"); v == nil {
		d.Errorf(n, "%s: z_score is required (e.g. 4)", where)
	} else if z, ok := d.Number(v, where+".z_score"); ok {
		if z <= 0 {
			d.Errorf(v, "%s.z_score: must be more than 0", where)
		}
		b.ZScore = z
	}
	if v := m.Value("floor"); v != nil {
		if f, ok := d.Number(v, where+".floor"); ok {
			if f < 0 {
				d.Errorf(v, "%s.floor: must not be negative", where)
			}
			b.Floor = f
		}
	}
	return b
}

func (d *decoder) firstSeen(where string, n *yaml.Node) *FirstSeen {
	m, ok := d.Mapping(n, where, "key", "learn_for", "forget_after", "learn_per", "remember")
	if !ok {
		return nil
	}
	f := &FirstSeen{}
	if v := m.Value("key"); v == nil {
		d.Errorf(n, "%s: key is required (a list of event fields)", where)
	} else {
		f.Key = d.fieldList(where+".key", v)
		if len(f.Key) == 0 && v.Kind == yaml.SequenceNode {
			d.Errorf(v, "%s.key: list at least one event field", where)
		}
	}
	if v := m.Value("learn_for"); v != nil {
		f.LearnFor, _ = d.PromDuration(v, where+".learn_for")
	}
	if v := m.Value("forget_after"); v != nil {
		if fa, ok := d.PromDuration(v, where+".forget_after"); ok {
			if fa <= f.LearnFor {
				d.Errorf(v, "%s.forget_after: must be longer than learn_for", where)
			}
			f.ForgetAfter = fa
		}
	}
	if e, _ := m.Get("learn_per"); e.Value != nil {
		f.LearnPer = d.fieldList(where+".learn_per", e.Value)
		els, _ := d.Sequence(e.Value, where+".learn_per")
		for i, el := range els {
			if name := el.Value; slices.Contains(f.LearnPer, name) && !slices.Contains(f.Key, name) {
				d.Errorf(el, "%s.learn_per[%d]: %s is not a field of the key: each value of the key's fields listed here learns for itself", where, i, quote(name))
			}
		}
		if f.LearnFor <= 0 {
			d.Errorf(e.Key, "%s: learn_per needs a learn_for", where)
		}
	}
	if e, _ := m.Get("remember"); e.Value != nil {
		if s, ok := d.String(e.Value, where+".remember"); ok {
			f.Remember = Remember(s)
			switch {
			case f.Remember != RememberAlways && f.Remember != RememberLearning:
				d.Errorf(e.Value, "%s: remember %s is not one of always, learning", where, quote(s))
			case f.Remember == RememberLearning && f.LearnFor <= 0:
				d.Errorf(e.Key, "%s: remember: learning keeps what was seen while learning: it needs a learn_for", where)
			case f.Remember == RememberAlways:
				f.Remember = "" // the default: the rule's definition (and state) as if it were left out
			}
		}
	}
	return f
}

var exceptionKeys = []string{"role", "application", "client_cidr", "queryid", "relation", "database", "expires"}

func (d *decoder) exception(where string, n *yaml.Node) (Exception, bool) {
	m, ok := d.Mapping(n, where, exceptionKeys...)
	if !ok {
		return Exception{}, false
	}
	before := len(d.Errs)
	x := Exception{Pos: d.Pos(n)}
	str := func(key string, dst *string) {
		if v := m.Value(key); v != nil {
			if s, ok := d.String(v, where+"."+key); ok {
				if s == "" {
					d.Errorf(v, "%s.%s: must not be empty (leave the key out to match any)", where, key)
				}
				*dst = s
			}
		}
	}
	str("role", &x.Role)
	str("application", &x.Application)
	str("relation", &x.Relation)
	str("database", &x.Database)
	if v := m.Value("client_cidr"); v != nil {
		if s, ok := d.String(v, where+".client_cidr"); ok {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				if a, aerr := netip.ParseAddr(s); aerr == nil {
					p = netip.PrefixFrom(a, a.BitLen())
					err = nil
				}
			}
			if err != nil {
				d.Errorf(v, "%s.client_cidr: %s is not a CIDR prefix (e.g. 10.20.0.0/16) or an address", where, quote(s))
			} else if p.Masked() != p {
				d.Errorf(v, "%s.client_cidr: %s has host bits set; did you mean %s?", where, quote(s), p.Masked())
			} else {
				x.ClientCIDR = p
			}
		}
	}
	if v := m.Value("queryid"); v != nil {
		x.QueryID, x.HasQueryID = d.Int(v, where+".queryid")
	}
	if v := m.Value("expires"); v != nil {
		if s, ok := d.String(v, where+".expires"); ok {
			t, err := parseExpires(s)
			if err != nil {
				d.Errorf(v, "%s.expires: %v", where, err)
			}
			x.Expires = t
		}
	}
	matchers := 0
	for _, e := range m {
		if e.Key.Value != "expires" {
			matchers++
		}
	}
	if matchers == 0 {
		d.Errorf(n, "%s: an exception needs at least one of role, application, client_cidr, queryid, relation, database; an empty one would silence the rule", where)
	}
	return x, len(d.Errs) == before
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
	n = yamlfile.Resolve(n)
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := yamlfile.Resolve(n.Content[i]), yamlfile.Resolve(n.Content[i+1])
		if k.Kind == yaml.ScalarNode && k.Value == "name" && v.Kind == yaml.ScalarNode {
			return v.Value
		}
	}
	return ""
}
