package yamlfile

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Decoder collects the problems of one file while its node tree is decoded:
// each helper checks one value, reports what is wrong with it at its place
// ("where: want X, got Y"), and says whether the value can be used, so that
// decoding goes on past a bad value and every problem is reported at once.
// where names the value in messages: a path such as
// "sensitive[0].columns", or a description such as `rule "R".aggregate`.
//
// Nodes given to the helpers may be aliases: they are resolved. Parse
// bounds what aliases expand to, so decoding a tree it returned never
// explodes.
type Decoder struct {
	File string
	Errs Errors
}

// ErrorAt records a problem at line and col of the file.
func (d *Decoder) ErrorAt(line, col int, format string, args ...any) {
	d.Errs = append(d.Errs, Error{Pos: Pos{File: d.File, Line: line, Column: col}, Msg: fmt.Sprintf(format, args...)})
}

// Errorf records a problem at node n.
func (d *Decoder) Errorf(n *yaml.Node, format string, args ...any) {
	d.ErrorAt(n.Line, n.Column, format, args...)
}

// Pos returns the position of node n in the file.
func (d *Decoder) Pos(n *yaml.Node) Pos { return Pos{File: d.File, Line: n.Line, Column: n.Column} }

// Entry is a key of a mapping and its value. Both are resolved; Value is nil
// when the value is null, which the formats treat as an absent key.
type Entry struct{ Key, Value *yaml.Node }

// Entries are the entries of a mapping, in file order.
type Entries []Entry

// Get returns the entry of key.
func (es Entries) Get(key string) (Entry, bool) {
	for _, e := range es {
		if e.Key.Value == key {
			return e, true
		}
	}
	return Entry{}, false
}

// Value returns the value of key, or nil when the key is absent or null.
func (es Entries) Value(key string) *yaml.Node {
	e, _ := es.Get(key)
	return e.Value
}

// Mapping checks that n is a mapping whose keys are names among known and
// returns its entries. Every other key is reported, and so are a key given
// twice (with the first one's position) and a merge key (<<), which is
// refused rather than half-supported; those entries are left out. ok is
// false only when n is not a mapping.
func (d *Decoder) Mapping(n *yaml.Node, where string, known ...string) (Entries, bool) {
	n = Resolve(n)
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, "%s: want a mapping (%s), got %s", where, strings.Join(known, ", "), Describe(n))
		return nil, false
	}
	return d.entries(n, where, func(k *yaml.Node) bool {
		for _, name := range known {
			if k.Value == name {
				return true
			}
		}
		d.Errorf(k, "%s: unknown key %s (known: %s)", where, Quote(k.Value), strings.Join(known, ", "))
		return false
	}), true
}

// entries returns the entries of mapping n whose keys are names accepted by
// keep, reporting the other keys.
func (d *Decoder) entries(n *yaml.Node, where string, keep func(key *yaml.Node) bool) Entries {
	out := make(Entries, 0, len(n.Content)/2)
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := Resolve(n.Content[i]), Resolve(n.Content[i+1])
		switch {
		case k.Kind != yaml.ScalarNode:
			d.Errorf(k, "%s: keys must be names, got %s", where, Describe(k))
			continue
		case k.ShortTag() == "!!merge":
			d.Errorf(k, "%s: merge keys (<<) are not supported; write the keys out", where)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.Errorf(k, "%s: duplicate key %s (first at %d:%d)", where, Quote(k.Value), first.Line, first.Column)
			continue
		}
		seen[k.Value] = k
		if !keep(k) {
			continue
		}
		if IsNull(v) {
			v = nil
		}
		out = append(out, Entry{Key: k, Value: v})
	}
	return out
}

// StringMap decodes a mapping of names to strings (labels, annotations),
// whatever the names. Null values are left out. ok is false when n is not a
// mapping or a value is not a string.
func (d *Decoder) StringMap(n *yaml.Node, where string) (map[string]string, bool) {
	n = Resolve(n)
	if n.Kind != yaml.MappingNode {
		d.Errorf(n, "%s: want a mapping of names to text, got %s", where, Describe(n))
		return nil, false
	}
	out := map[string]string{}
	ok := true
	for _, e := range d.entries(n, where, func(*yaml.Node) bool { return true }) {
		if e.Value == nil {
			continue
		}
		s, sok := d.String(e.Value, where+"."+e.Key.Value)
		ok = ok && sok
		out[e.Key.Value] = s
	}
	return out, ok
}

// Sequence checks that n is a list and returns its elements, resolved.
func (d *Decoder) Sequence(n *yaml.Node, where string) ([]*yaml.Node, bool) {
	n = Resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.Errorf(n, "%s: want a list, got %s", where, Describe(n))
		return nil, false
	}
	els := make([]*yaml.Node, len(n.Content))
	for i, el := range n.Content {
		els[i] = Resolve(el)
	}
	return els, true
}

// Strings decodes a list of strings; the elements that are not strings are
// reported, and left out.
func (d *Decoder) Strings(n *yaml.Node, where string) ([]string, bool) {
	els, ok := d.Sequence(n, where)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(els))
	for i, el := range els {
		if s, sok := d.String(el, fmt.Sprintf("%s[%d]", where, i)); sok {
			out = append(out, s)
		} else {
			ok = false
		}
	}
	return out, ok
}

// String returns the text of a scalar; null is not a string.
func (d *Decoder) String(n *yaml.Node, where string) (string, bool) {
	n = Resolve(n)
	if n.Kind != yaml.ScalarNode || IsNull(n) {
		d.Errorf(n, "%s: want a string, got %s", where, Describe(n))
		return "", false
	}
	return n.Value, true
}

// Bool decodes true or false. YAML 1.1's yes, no, on and off are refused
// rather than guessed at, and so is a quoted "true".
func (d *Decoder) Bool(n *yaml.Node, where string) (bool, bool) {
	n = Resolve(n)
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		d.Errorf(n, "%s: want true or false, got %s", where, Describe(n))
		return false, false
	}
	return b, true
}

// Int decodes a decimal integer ("1000", "1_000", "-5"). A leading zero
// does not mean octal: yaml.v3 would read 0100 as 64, a trap in a
// threshold; 0x10 and 0o17 are refused.
func (d *Decoder) Int(n *yaml.Node, where string) (int64, bool) {
	n = Resolve(n)
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 10, 64)
		switch {
		case err == nil:
			return i, true
		case errors.Is(err, strconv.ErrRange) && strings.HasPrefix(n.Value, "-"):
			d.Errorf(n, "%s: want an integer down to %d, got %s", where, int64(math.MinInt64), Describe(n))
			return 0, false
		case errors.Is(err, strconv.ErrRange):
			d.Errorf(n, "%s: want an integer up to %d, got %s", where, int64(math.MaxInt64), Describe(n))
			return 0, false
		case n.ShortTag() == "!!int":
			d.Errorf(n, "%s: want a decimal integer, got %s", where, Describe(n))
			return 0, false
		}
	}
	d.Errorf(n, "%s: want an integer, got %s", where, Describe(n))
	return 0, false
}

// Number decodes a finite number, integer or not.
func (d *Decoder) Number(n *yaml.Node, where string) (float64, bool) {
	n = Resolve(n)
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			return f, true
		}
	}
	d.Errorf(n, "%s: want a number, got %s", where, Describe(n))
	return 0, false
}

// Duration decodes a Go duration ("250ms", "1h30m", "-1s"): the syntax of
// the config file, whose checks decide which values make sense.
func (d *Decoder) Duration(n *yaml.Node, where string) (time.Duration, bool) {
	return d.duration(n, where, goDurationExamples, parseGoDuration)
}

// PromDuration decodes a Go duration or a Prometheus one with day, week and
// year units ("90s", "1d", "2w"), not negative: the syntax of rule files.
func (d *Decoder) PromDuration(n *yaml.Node, where string) (time.Duration, bool) {
	return d.duration(n, where, promDurationExamples, ParsePromDuration)
}

func (d *Decoder) duration(n *yaml.Node, where, examples string, parse func(string) (time.Duration, error)) (time.Duration, bool) {
	n = Resolve(n)
	if n.Kind != yaml.ScalarNode || IsNull(n) {
		d.Errorf(n, "%s: want a duration (e.g. %s), got %s", where, examples, Describe(n))
		return 0, false
	}
	dur, err := parse(n.Value)
	if err != nil {
		d.Errorf(n, "%s: %v", where, err)
		return 0, false
	}
	return dur, true
}

const (
	goDurationExamples   = `"1s"`
	promDurationExamples = `"90s", "10m", "1h30m", "1d"`
)

// parseGoDuration parses a Go duration, with an error that quotes s safely
// and suggests what to write instead.
func parseGoDuration(s string) (time.Duration, error) {
	dur, err := time.ParseDuration(s)
	if err != nil {
		hint := ""
		if strings.HasSuffix(s, "d") {
			hint = `; there is no day unit: write "24h"`
		}
		return 0, fmt.Errorf("%s is not a duration (e.g. %s)%s", Quote(s), goDurationExamples, hint)
	}
	return dur, nil
}

var promDuration = regexp.MustCompile(`^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$`)

// ParsePromDuration parses a Go duration ("90s", "1h30m", "1.5h") or a
// Prometheus-style one with day, week and year units ("1d", "2w", "1y" =
// 365d). Negative durations are refused.
func ParsePromDuration(s string) (time.Duration, error) {
	if dur, err := time.ParseDuration(s); err == nil {
		if dur < 0 {
			return 0, fmt.Errorf("%s is negative", Quote(s))
		}
		return dur, nil
	}
	m := promDuration.FindStringSubmatch(s)
	if s == "" || m == nil {
		return 0, fmt.Errorf(`%s is not a duration (e.g. %s)`, Quote(s), promDurationExamples)
	}
	units := []time.Duration{365 * 24 * time.Hour, 7 * 24 * time.Hour, 24 * time.Hour, time.Hour, time.Minute, time.Second, time.Millisecond}
	var total time.Duration
	for i, u := range units {
		if m[i+1] == "" {
			continue
		}
		v, err := strconv.ParseInt(m[i+1], 10, 64)
		if err != nil || v > int64(math.MaxInt64/u) || total > math.MaxInt64-time.Duration(v)*u {
			return 0, fmt.Errorf("%s is too long", Quote(s))
		}
		total += time.Duration(v) * u
	}
	return total, nil
}

// Resolve follows aliases to the node they stand for.
func Resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// IsNull reports whether n is null ("~", "null" or nothing).
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// Describe names what a node is, for "want X, got Y" messages: "a mapping",
// "a list", "null", `the quoted string "x"` or the value itself, quoted
// with Quote.
func Describe(n *yaml.Node) string {
	n = Resolve(n)
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case IsNull(n):
		return "null"
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		return "the quoted string " + Quote(n.Value)
	default:
		return Quote(n.Value)
	}
}
