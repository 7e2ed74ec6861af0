package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/internal/yamlsrc"

	"go.yaml.in/yaml/v3"
)

// The decoder walks the yaml.Node tree itself, guided by the yaml tags of
// Config, instead of using yaml.v3's Decoder.KnownFields: that stops at the
// first unknown key and gives no columns, and the validator needs the position
// of every value, not only of the broken ones.
//
// Decoding writes over a Config that already holds the defaults, so a key that
// is absent (or null) keeps its default: that is how alerts.stdout tells a
// missing key (true) from an explicit false.

// maxValues bounds the number of values decoded, so that a few aliases
// repeated many times (a "billion laughs" file) cannot make loading explode.
// A real config holds a few hundred.
const maxValues = 100_000

var durationType = reflect.TypeFor[time.Duration]()

// field is where a key's value is in the file.
type field struct {
	line, col int
	// set reports that a non-null value was decoded; when false, the key is
	// present with no value and line, col are the key's.
	set bool
}

type decoder struct {
	file string
	data []byte
	errs Errors
	// fields holds every key found, by path ("sensitive[0].table"), for the
	// positions of the validator's messages.
	fields map[string]field
	// failed holds the paths whose value had the wrong shape and was not
	// decoded; the validator leaves them alone rather than report a second,
	// derived error.
	failed map[string]bool
	root   field
	values int
	// alias is the outermost alias being expanded, if any: the place to
	// blame when expansion goes too far.
	alias *yaml.Node
}

func (d *decoder) errorAt(line, col int, format string, args ...any) {
	d.errs = append(d.errs, Error{File: d.file, Line: line, Column: col, Msg: fmt.Sprintf(format, args...)})
}

// parse checks the text and parses it into a node tree. It returns the
// top-level node (nil for an empty file) and whether there is a tree to
// decode.
func (d *decoder) parse() (*yaml.Node, bool) {
	if line, col, msg, bad := yamlsrc.FirstInvalidChar(d.data); bad {
		d.errorAt(line, col, "%s", msg)
		return nil, false
	}
	dec := yaml.NewDecoder(bytes.NewReader(d.data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, true // empty, or only comments
	} else if err != nil {
		d.syntaxError(err)
		return nil, false
	}
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			d.syntaxError(err)
			return nil, false
		}
		if len(next.Content) == 1 && !isNull(next.Content[0]) {
			d.errorAt(next.Line, next.Column, "a second YAML document starts here; a config file holds one")
			break
		}
	}
	if len(doc.Content) != 1 || isNull(doc.Content[0]) {
		return nil, true // "---" alone
	}
	root := doc.Content[0]
	d.root = field{line: root.Line, col: root.Column, set: true}
	return root, true
}

var yamlLine = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

// syntaxError records a yaml.v3 syntax error. yaml.v3's line numbers are not
// reliable: it omits the line for scanner errors on the first line and for
// unknown aliases, and reports some parser errors one line early (0-based) or
// at the start of the enclosing block. The line that matters to a person is
// the first line whose inclusion makes the file fail this way, so find it by
// bisecting on prefixes of the file: a prefix that stops before the problem
// parses, or fails differently.
func (d *decoder) syntaxError(err error) {
	msg, line := strings.TrimPrefix(err.Error(), "yaml: "), 0
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	ends := yamlsrc.LineEnds(d.data)
	if k := sort.Search(len(ends), func(i int) bool {
		e := yamlsrc.FirstError(d.data[:ends[i]])
		return e != nil && e.Error() == err.Error()
	}); k < len(ends) {
		line = k + 1
	}
	d.errorAt(max(line, 1), 0, "invalid YAML: %s", msg)
}

// decode decodes n into v, the value at path.
func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind == yaml.AliasNode && d.alias == nil {
		d.alias = n
		defer func() { d.alias = nil }()
	}
	n = resolveAlias(n)
	d.values++
	if d.values == maxValues {
		at := n
		if d.alias != nil {
			at = d.alias
		}
		d.errorAt(at.Line, at.Column, "more than %d values once aliases are expanded; a config file needs far fewer", maxValues)
	}
	if d.values >= maxValues {
		return
	}
	d.fields[path] = field{line: n.Line, col: n.Column, set: true}
	d.value(path, n, v)
}

// value decodes n into v according to v's type.
func (d *decoder) value(path string, n *yaml.Node, v reflect.Value) {
	switch {
	case v.Type() == durationType:
		d.duration(path, n, v)
	case v.Type() == sourceSetType:
		d.sources(path, n, v.Interface().(source.Set))
	case v.Kind() == reflect.Struct:
		d.mapping(path, n, v)
	case v.Kind() == reflect.Slice:
		d.sequence(path, n, v)
	case v.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode || isNull(n) {
			d.wrongType(path, n, "a string")
			return
		}
		v.SetString(n.Value)
	case v.Kind() == reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.wrongType(path, n, "true or false")
			return
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int64:
		d.integer(path, n, v)
	case v.Kind() == reflect.Pointer:
		// An optional section (basic_auth): nil unless the file has it, since
		// a null value never gets here.
		p := reflect.New(v.Type().Elem())
		d.value(path, n, p.Elem())
		v.Set(p)
	default:
		// Only reachable by adding a field of a new type to Config.
		panic(fmt.Sprintf("config: no decoder for %s (%s)", v.Type(), path))
	}
}

func (d *decoder) mapping(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		if path == "" {
			d.failed[path] = true
			d.errorAt(n.Line, n.Column, "want a mapping of settings (%s) at the top level, got %s", strings.Join(keysOf(v.Type()), ", "), describe(n))
			return
		}
		d.wrongType(path, n, "a mapping")
		return
	}
	where := " in " + path
	if path == "" {
		where = " at the top level"
	}
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := resolveAlias(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorAt(k.Line, k.Column, "keys must be names, got %s%s", describe(k), where)
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.errorAt(k.Line, k.Column, "merge keys (<<) are not supported%s; write the keys out", where)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorAt(k.Line, k.Column, "duplicate key %s%s (first at %d:%d)", quote(k.Value), where, first.Line, first.Column)
			continue
		}
		seen[k.Value] = k
		idx, ok := fieldIndex(v.Type(), k.Value)
		if !ok {
			d.errorAt(k.Line, k.Column, "unknown key %s%s (known: %s)", quote(k.Value), where, strings.Join(keysOf(v.Type()), ", "))
			continue
		}
		p := join(path, k.Value)
		if isNull(resolveAlias(val)) {
			d.fields[p] = field{line: k.Line, col: k.Column}
			continue
		}
		d.decode(p, val, v.Field(idx))
	}
}

func (d *decoder) sequence(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.wrongType(path, n, "a list")
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, el := range n.Content {
		if e, ok := s.Index(i).Addr().Interface().(interface{ setDefaults() }); ok {
			e.setDefaults()
		}
		d.decode(fmt.Sprintf("%s[%d]", path, i), el, s.Index(i))
	}
	v.Set(s)
}

func (d *decoder) integer(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.wrongType(path, n, "an integer")
		return
	}
	// Decimal only: yaml.v3 would read 0100 as octal 64, a trap in a
	// threshold.
	i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		d.wrongType(path, n, fmt.Sprintf("an integer up to %d", int64(math.MaxInt64)))
		return
	}
	if err != nil {
		d.wrongType(path, n, "a decimal integer")
		return
	}
	v.SetInt(i)
}

func (d *decoder) duration(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.wrongType(path, n, `a duration (e.g. "1s")`)
		return
	}
	dur, err := time.ParseDuration(n.Value)
	if err != nil {
		d.failed[path] = true
		hint := ""
		if strings.HasSuffix(n.Value, "d") {
			hint = `; there is no day unit: write "24h"`
		}
		d.errorAt(n.Line, n.Column, "%s: %s is not a duration (e.g. \"1s\")%s", path, quote(n.Value), hint)
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) wrongType(path string, n *yaml.Node, want string) {
	d.failed[path] = true
	d.errorAt(n.Line, n.Column, "%s: want %s, got %s", path, want, describe(n))
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "null"
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		return "the quoted string " + quote(n.Value)
	default:
		return quote(n.Value)
	}
}

// quote quotes a value from the file for a message, shortened so that a
// pasted blob does not flood the terminal. A value that may hold a secret is
// redacted first: a DSN pasted in the wrong place (database: postgres://…
// instead of database: {dsn: …}) must not print its password, nor a URL its
// user info, nor a "secret:…" missing the space after its colon (which YAML
// reads as part of a plain scalar, or as a key) its secret.
func quote(s string) string {
	s = redactSecrets(s)
	const maxRunes = 40
	if utf8.RuneCountInString(s) > maxRunes {
		s = string([]rune(s)[:maxRunes]) + "…"
	}
	return strconv.Quote(s)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlName returns the key of a struct field, or "" for a field that is not
// read from the file.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func fieldIndex(t reflect.Type, key string) (int, bool) {
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" && name == key {
			return i, true
		}
	}
	return 0, false
}

// keysOf lists the keys of a section in declaration order, for messages.
func keysOf(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

// urlScheme matches the scheme of a URL of any kind.
var urlScheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*://`)

// secretSetting matches a setting whose value is secret (password=,
// sslpassword=, secret:, bearer_token:, ...) up to the end of the string,
// since where the value ends is anyone's guess.
var secretSetting = regexp.MustCompile(`(?is)((?:password|secret|token)\s*[:=]).*$`)

// redactSecrets hides the passwords of a URL or DSN, and anything following
// a secret's key, in a value from the file.
func redactSecrets(s string) string {
	if scheme := urlScheme.FindString(s); scheme != "" {
		s = scheme + redactURLRest(s[len(scheme):])
	} else if looksLikeDSN(s) {
		s = redactDSN(s)
	}
	return secretSetting.ReplaceAllString(s, "${1}"+redactedMask)
}

// passwordSetting matches the password of a keyword/value connection string.
var passwordSetting = regexp.MustCompile(`(?i)\bpassword\s*=`)

func looksLikeDSN(s string) bool {
	return strings.Contains(s, "://") || passwordSetting.MatchString(s)
}
