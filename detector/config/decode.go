package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/internal/yamlfile"

	"go.yaml.in/yaml/v3"
)

// The decoder walks the yaml.Node tree itself, guided by the yaml tags of
// Config, instead of using yaml.v3's Decoder.KnownFields: that stops at the
// first unknown key and gives no columns, and the validator needs the position
// of every value, not only of the broken ones. Parsing, strict mappings and
// scalars are the shared YAML front end's (internal/yamlfile), so that config
// and rule files read and refuse YAML alike.
//
// Decoding writes over a Config that already holds the defaults, so a key that
// is absent (or null) keeps its default: that is how alerts.stdout tells a
// missing key (true) from an explicit false.

var durationType = reflect.TypeFor[time.Duration]()

// field is where a key's value is in the file.
type field struct {
	line, col int
	// set reports that a non-null value was decoded; when false, the key is
	// present with no value and line, col are the key's.
	set bool
}

type decoder struct {
	yamlfile.Decoder
	data []byte
	// fields holds every key found, by path ("sensitive[0].table"), for the
	// positions of the validator's messages.
	fields map[string]field
	// failed holds the paths whose value had the wrong shape and was not
	// decoded; the validator leaves them alone rather than report a second,
	// derived error.
	failed map[string]bool
	root   field
}

func newDecoder(file string, data []byte) *decoder {
	return &decoder{Decoder: yamlfile.Decoder{File: file}, data: data, fields: map[string]field{}, failed: map[string]bool{}}
}

func (d *decoder) errorAt(line, col int, format string, args ...any) {
	d.ErrorAt(line, col, format, args...)
}

// parse checks the text and parses it into a node tree. It returns the
// top-level node (nil for an empty file) and whether there is a tree to
// decode.
func (d *decoder) parse() (*yaml.Node, bool) {
	root, errs := yamlfile.Parse(d.File, d.data, "config file")
	d.Errs = append(d.Errs, errs...)
	if root == nil {
		return nil, len(errs) == 0
	}
	d.root = field{line: root.Line, col: root.Column, set: true}
	return root, true
}

// decode decodes n into v, the value at path ("" for the whole file). A
// caller decoding a section of its own (whose type the struct tags do not
// describe) decodes the values inside it the same way, with their paths.
func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) {
	n = yamlfile.Resolve(n)
	d.fields[path] = field{line: n.Line, col: n.Column, set: true}
	if !d.value(path, n, v) {
		d.failed[path] = true
	}
}

// value decodes n into v according to v's type. It reports false when n
// has the wrong shape and v was left alone.
func (d *decoder) value(path string, n *yaml.Node, v reflect.Value) (ok bool) {
	switch {
	case v.Type() == durationType:
		var dur time.Duration
		if dur, ok = d.Duration(n, where(path)); ok {
			v.SetInt(int64(dur))
		}
	case v.Type() == sourceSetType:
		return d.sources(path, n, v.Interface().(source.Set))
	case v.Type() == targetDatabasesType:
		return d.targetDatabases(path, n, v)
	case v.Type() == targetDatabaseType:
		return d.targetDatabase(path, n, v)
	case v.Type() == serverType:
		return d.scalarOr(path, n, v, "dsn", "a connection string or a mapping (name, dsn)")
	case v.Kind() == reflect.Struct:
		return d.mapping(path, n, v)
	case v.Kind() == reflect.Slice:
		return d.sequence(path, n, v)
	case v.Kind() == reflect.String:
		var s string
		if s, ok = d.String(n, where(path)); ok {
			v.SetString(s)
		}
	case v.Kind() == reflect.Bool:
		var b bool
		if b, ok = d.Bool(n, where(path)); ok {
			v.SetBool(b)
		}
	case v.Kind() == reflect.Int64:
		var i int64
		if i, ok = d.Int(n, where(path)); ok {
			v.SetInt(i)
		}
	case v.Kind() == reflect.Pointer:
		// An optional section (basic_auth): nil unless the file has it, since
		// a null value never gets here.
		p := reflect.New(v.Type().Elem())
		ok = d.value(path, n, p.Elem())
		v.Set(p)
	default:
		// Only reachable by adding a field of a new type to Config.
		panic(fmt.Sprintf("config: no decoder for %s (%s)", v.Type(), path))
	}
	return ok
}

func (d *decoder) mapping(path string, n *yaml.Node, v reflect.Value) bool {
	entries, ok := d.Mapping(n, where(path), keysOf(v.Type())...)
	for _, e := range entries {
		p := join(path, e.Key.Value)
		if e.Value == nil {
			d.fields[p] = field{line: e.Key.Line, col: e.Key.Column}
			continue
		}
		d.decode(p, e.Value, v.Field(fieldIndex(v.Type(), e.Key.Value)))
	}
	return ok
}

func (d *decoder) sequence(path string, n *yaml.Node, v reflect.Value) bool {
	els, ok := d.Sequence(n, where(path))
	if !ok {
		return false
	}
	s := reflect.MakeSlice(v.Type(), len(els), len(els))
	for i, el := range els {
		if e, ok := s.Index(i).Addr().Interface().(interface{ setDefaults() }); ok {
			e.setDefaults()
		}
		d.decode(fmt.Sprintf("%s[%d]", path, i), el, s.Index(i))
	}
	v.Set(s)
	return true
}

// where names the value at path in messages.
func where(path string) string {
	if path == "" {
		return "config file"
	}
	return path
}

// quote quotes a value from the file for a message, with any secret in it
// redacted (yamlfile.Quote).
func quote(s string) string { return yamlfile.Quote(s) }

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

// fieldIndex returns the index of the field of struct type t whose key is
// key, one of keysOf(t).
func fieldIndex(t reflect.Type, key string) int {
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == key {
			return i
		}
	}
	panic(fmt.Sprintf("config: %s has no key %q", t, key))
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
