package engine

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
)

// fieldKind is how a grouping field is read, hashed and compared.
type fieldKind int

const (
	kindString fieldKind = iota
	kindInt
	kindBool
	kindList
)

// field is an event field used in a group key (aggregate.by, first_seen.key,
// count_distinct) or as a numeric value (sum, max, threshold field).
type field struct {
	name  string
	label string // the alert label it becomes; "" when it is not a label
	kind  fieldKind
	str   func(*model.Event) string
	num   func(*model.Event) int64 // kindInt and kindBool (0/1)
	list  func(*model.Event) []string
}

// columnsField is the pseudo-field of rules without aggregate: the
// sensitive columns read, or for a WAL change those changed.
const columnsField = "columns"

func lookupField(name string) (field, error) {
	s := func(label string, f func(*model.Event) string) field {
		return field{name: name, label: label, kind: kindString, str: f}
	}
	n := func(f func(*model.Event) int64) field { return field{name: name, label: name, kind: kindInt, num: f} }
	l := func(label string, f func(*model.Event) []string) field {
		return field{name: name, label: label, kind: kindList, list: f}
	}
	switch name {
	case "source":
		return s(model.LabelSource, func(e *model.Event) string { return string(e.Source) }), nil
	case "database":
		return s(model.LabelDatabase, func(e *model.Event) string { return e.Database }), nil
	case "role":
		return s(model.LabelRole, func(e *model.Event) string { return e.Role }), nil
	case "client_addr":
		return s(model.LabelClientAddr, func(e *model.Event) string { return e.ClientAddr }), nil
	case "application":
		return s(model.LabelApplication, func(e *model.Event) string { return e.Application }), nil
	case "operation":
		return s(name, func(e *model.Event) string { return e.Operation }), nil
	case "relation":
		return s(model.LabelTable, func(e *model.Event) string { return e.Relation }), nil
	case "message_prefix":
		return s(name, func(e *model.Event) string { return e.MessagePrefix }), nil
	case "kind":
		return s(name, func(e *model.Event) string { return e.Kind }), nil
	case "object":
		return s(name, func(e *model.Event) string { return e.Object }), nil
	case "sensitive_read":
		return l(model.LabelColumns, func(e *model.Event) []string { return e.SensitiveRead }), nil
	case "sensitive_referenced":
		return l(name, func(e *model.Event) []string { return e.SensitiveReferenced }), nil
	case "changed":
		return l(model.LabelColumns, func(e *model.Event) []string { return e.Changed }), nil
	case columnsField:
		return l(model.LabelColumns, func(e *model.Event) []string {
			if len(e.SensitiveRead) > 0 {
				return e.SensitiveRead
			}
			return e.Changed
		}), nil
	case "complete":
		return field{name: name, label: name, kind: kindBool, num: func(e *model.Event) int64 {
			if e.Complete {
				return 1
			}
			return 0
		}}, nil
	case "query_id":
		return n(func(e *model.Event) int64 { return e.QueryID }), nil
	case "lsn":
		return n(func(e *model.Event) int64 { return int64(e.LSN) }), nil
	case "pid":
		return n(func(e *model.Event) int64 { return int64(e.PID) }), nil
	case "rows":
		return n(func(e *model.Event) int64 { return e.Rows }), nil
	case "calls":
		return n(func(e *model.Event) int64 { return e.Calls }), nil
	case "rows_per_call":
		return n(func(e *model.Event) int64 { return e.RowsPerCall() }), nil
	case "running_seconds":
		return n(func(e *model.Event) int64 { return int64(e.Running / time.Second) }), nil
	}
	return field{}, fmt.Errorf("unknown event field %q", name)
}

// groupFields resolves the fields of a group key. When both sensitive_read
// and changed are listed, changed keeps its own label name.
func groupFields(names []string) ([]field, error) {
	fs := make([]field, 0, len(names))
	for _, n := range names {
		f, err := lookupField(n)
		if err != nil {
			return nil, err
		}
		if n == "changed" && slices.Contains(names, "sensitive_read") {
			f.label = n
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// keyVal is one field's value in a stored group key.
type keyVal struct {
	s    string
	n    int64
	list []string
}

// sep separates values in hashes and canonical strings; it cannot occur in
// an identifier PostgreSQL reports (and a collision is still told apart by
// comparing the values).
const sep = 0x1f

func hashEvent(h *maphash.Hash, fs []field, ev *model.Event) uint64 {
	h.Reset()
	var b [8]byte
	for i := range fs {
		switch f := &fs[i]; f.kind {
		case kindString:
			h.WriteString(f.str(ev))
		case kindInt, kindBool:
			binary.LittleEndian.PutUint64(b[:], uint64(f.num(ev)))
			h.Write(b[:])
		case kindList:
			for _, s := range f.list(ev) {
				h.WriteString(s)
				h.WriteByte(sep)
			}
		}
		h.WriteByte(0)
	}
	return h.Sum64()
}

func hashKey(h *maphash.Hash, fs []field, key []keyVal) uint64 {
	h.Reset()
	var b [8]byte
	for i := range fs {
		switch fs[i].kind {
		case kindString:
			h.WriteString(key[i].s)
		case kindInt, kindBool:
			binary.LittleEndian.PutUint64(b[:], uint64(key[i].n))
			h.Write(b[:])
		case kindList:
			for _, s := range key[i].list {
				h.WriteString(s)
				h.WriteByte(sep)
			}
		}
		h.WriteByte(0)
	}
	return h.Sum64()
}

func keyEquals(fs []field, key []keyVal, ev *model.Event) bool {
	for i := range fs {
		switch f := &fs[i]; f.kind {
		case kindString:
			if key[i].s != f.str(ev) {
				return false
			}
		case kindInt, kindBool:
			if key[i].n != f.num(ev) {
				return false
			}
		case kindList:
			if !slices.Equal(key[i].list, f.list(ev)) {
				return false
			}
		}
	}
	return true
}

func keyOf(fs []field, ev *model.Event) []keyVal {
	key := make([]keyVal, len(fs))
	for i := range fs {
		switch f := &fs[i]; f.kind {
		case kindString:
			key[i].s = f.str(ev)
		case kindInt, kindBool:
			key[i].n = f.num(ev)
		case kindList:
			key[i].list = slices.Clone(f.list(ev))
		}
	}
	return key
}

// text is the value as a label and in the state file: lists sorted and
// comma-joined, booleans true/false, integers in decimal; "" when unknown.
func (k keyVal) text(kind fieldKind) string {
	switch kind {
	case kindInt:
		if k.n == 0 {
			return ""
		}
		return strconv.FormatInt(k.n, 10)
	case kindBool:
		return strconv.FormatBool(k.n != 0)
	case kindList:
		c := slices.Clone(k.list)
		slices.Sort(c)
		return strings.Join(slices.Compact(c), ",")
	}
	return k.s
}

// encodeKey and decodeKey convert a key to and from its form in the state
// file: one string per field, lists joined with the unit separator so that
// their order and empty elements survive.
func encodeKey(fs []field, key []keyVal) []string {
	out := make([]string, len(fs))
	for i := range fs {
		switch fs[i].kind {
		case kindString:
			out[i] = key[i].s
		case kindInt, kindBool:
			out[i] = strconv.FormatInt(key[i].n, 10)
		case kindList:
			out[i] = strings.Join(key[i].list, string(rune(sep)))
			if len(key[i].list) > 0 {
				out[i] = "L" + out[i]
			}
		}
	}
	return out
}

func decodeKey(fs []field, enc []string) ([]keyVal, error) {
	if len(enc) != len(fs) {
		return nil, fmt.Errorf("key has %d values, want %d", len(enc), len(fs))
	}
	key := make([]keyVal, len(fs))
	for i := range fs {
		switch fs[i].kind {
		case kindString:
			key[i].s = enc[i]
		case kindInt, kindBool:
			n, err := strconv.ParseInt(enc[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("key value %d: %w", i, err)
			}
			key[i].n = n
		case kindList:
			if enc[i] != "" {
				key[i].list = strings.Split(strings.TrimPrefix(enc[i], "L"), string(rune(sep)))
			}
		}
	}
	return key, nil
}
