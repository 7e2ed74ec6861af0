package engine

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"

	"github.com/pgtripwire/pgtripwire/model"
)

// Group keys and values are read through model's field table: a field
// added there can be grouped by, counted and compared here without a change.

// lookupField returns the event field called name that a group key or an
// aggregate may use: one of model's table that is not for match alone, or
// the columns pseudo-field of rules without aggregate.
func lookupField(name string) (model.EventField, error) {
	if name == model.ColumnsField.Name {
		return model.ColumnsField, nil
	}
	f, ok := model.LookupEventField(name)
	if !ok || f.Use == model.UseMatch {
		return model.EventField{}, fmt.Errorf("unknown event field %q", name)
	}
	return f, nil
}

// numericField returns the field called name if it is an integer: one
// summed, maximised or compared with a threshold.
func numericField(name string) (*model.EventField, bool) {
	f, err := lookupField(name)
	if err != nil || f.Type != model.FieldInt {
		return nil, false
	}
	return &f, true
}

// groupFields resolves the fields of a group key. When both sensitive_read
// and changed are listed, changed keeps its own label name.
func groupFields(names []string) ([]model.EventField, error) {
	fs := make([]model.EventField, 0, len(names))
	for _, n := range names {
		f, err := lookupField(n)
		if err != nil {
			return nil, err
		}
		if f.Use != model.UseGroup {
			return nil, fmt.Errorf("event field %q cannot group events", n)
		}
		if n == "changed" && slices.Contains(names, "sensitive_read") {
			f.Label = n
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// number is the value of an int or bool field as a key holds it: a bool is
// 0 or 1, as the state file has always stored it.
func number(f *model.EventField, ev *model.Event) int64 {
	if f.Type == model.FieldBool {
		if f.Bool(ev) {
			return 1
		}
		return 0
	}
	return f.Int(ev)
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

func hashEvent(h *maphash.Hash, fs []model.EventField, ev *model.Event) uint64 {
	h.Reset()
	var b [8]byte
	for i := range fs {
		switch f := &fs[i]; f.Type {
		case model.FieldString:
			h.WriteString(f.String(ev))
		case model.FieldInt, model.FieldBool:
			binary.LittleEndian.PutUint64(b[:], uint64(number(f, ev)))
			h.Write(b[:])
		case model.FieldList:
			for _, s := range f.List(ev) {
				h.WriteString(s)
				h.WriteByte(sep)
			}
		}
		h.WriteByte(0)
	}
	return h.Sum64()
}

func hashKey(h *maphash.Hash, fs []model.EventField, key []keyVal) uint64 {
	h.Reset()
	var b [8]byte
	for i := range fs {
		switch fs[i].Type {
		case model.FieldString:
			h.WriteString(key[i].s)
		case model.FieldInt, model.FieldBool:
			binary.LittleEndian.PutUint64(b[:], uint64(key[i].n))
			h.Write(b[:])
		case model.FieldList:
			for _, s := range key[i].list {
				h.WriteString(s)
				h.WriteByte(sep)
			}
		}
		h.WriteByte(0)
	}
	return h.Sum64()
}

func keyEquals(fs []model.EventField, key []keyVal, ev *model.Event) bool {
	for i := range fs {
		switch f := &fs[i]; f.Type {
		case model.FieldString:
			if key[i].s != f.String(ev) {
				return false
			}
		case model.FieldInt, model.FieldBool:
			if key[i].n != number(f, ev) {
				return false
			}
		case model.FieldList:
			if !slices.Equal(key[i].list, f.List(ev)) {
				return false
			}
		}
	}
	return true
}

func keyOf(fs []model.EventField, ev *model.Event) []keyVal {
	key := make([]keyVal, len(fs))
	for i := range fs {
		switch f := &fs[i]; f.Type {
		case model.FieldString:
			key[i].s = f.String(ev)
		case model.FieldInt, model.FieldBool:
			key[i].n = number(f, ev)
		case model.FieldList:
			key[i].list = slices.Clone(f.List(ev))
		}
	}
	return key
}

// text is the value as a label and in the state file: lists sorted and
// comma-joined, booleans true/false, integers in decimal; "" when unknown.
func (k keyVal) text(t model.FieldType) string {
	switch t {
	case model.FieldInt:
		if k.n == 0 {
			return ""
		}
		return strconv.FormatInt(k.n, 10)
	case model.FieldBool:
		return strconv.FormatBool(k.n != 0)
	case model.FieldList:
		c := slices.Clone(k.list)
		slices.Sort(c)
		return strings.Join(slices.Compact(c), ",")
	}
	return k.s
}

// encodeKey and decodeKey convert a key to and from its form in the state
// file: one string per field, lists joined with the unit separator so that
// their order and empty elements survive.
func encodeKey(fs []model.EventField, key []keyVal) []string {
	out := make([]string, len(fs))
	for i := range fs {
		switch fs[i].Type {
		case model.FieldString:
			out[i] = key[i].s
		case model.FieldInt, model.FieldBool:
			out[i] = strconv.FormatInt(key[i].n, 10)
		case model.FieldList:
			out[i] = strings.Join(key[i].list, string(rune(sep)))
			if len(key[i].list) > 0 {
				out[i] = "L" + out[i]
			}
		}
	}
	return out
}

// A key written before every group had the server fields (model.ServerFields) lacks
// them at its end: legacy gives their values, the one server the detector watched.
func decodeKey(fs []model.EventField, enc []string, legacy map[string]string) ([]keyVal, error) {
	if missing := len(fs) - len(enc); missing > 0 && missing <= len(model.ServerFields) &&
		isServerTail(fs[len(enc):]) {
		enc = slices.Clip(enc)
		for _, f := range fs[len(enc):] {
			enc = append(enc, legacy[f.Name])
		}
	}
	if len(enc) != len(fs) {
		return nil, fmt.Errorf("key has %d values, want %d", len(enc), len(fs))
	}
	key := make([]keyVal, len(fs))
	for i := range fs {
		switch fs[i].Type {
		case model.FieldString:
			key[i].s = enc[i]
		case model.FieldInt, model.FieldBool:
			n, err := strconv.ParseInt(enc[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("key value %d: %w", i, err)
			}
			key[i].n = n
		case model.FieldList:
			if enc[i] != "" {
				key[i].list = strings.Split(strings.TrimPrefix(enc[i], "L"), string(rune(sep)))
			}
		}
	}
	return key, nil
}

// isServerTail reports whether fs are server fields only (model.ServerFields).
func isServerTail(fs []model.EventField) bool {
	for _, f := range fs {
		if !slices.Contains(model.ServerFields, f.Name) {
			return false
		}
	}
	return true
}

// distinctValue is the value count_distinct counts: a list comma-joined, a
// number in decimal (a bool as 0 or 1).
func distinctValue(f *model.EventField, ev *model.Event) string {
	switch f.Type {
	case model.FieldString:
		return f.String(ev)
	case model.FieldList:
		return strings.Join(f.List(ev), ",")
	}
	return strconv.FormatInt(number(f, ev), 10)
}
