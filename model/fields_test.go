package model

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

// hiddenFromRules are the Event fields no rule may read, and why.
var hiddenFromRules = map[string]string{
	"Statement": "redacted text, one value per statement: never a label, not matched on",
}

// derivedFrom are the entries computed from more than one Event field, with the fields
// they read: rows_read falls back to Rows for sources that do not estimate RowsRead.
var derivedFrom = map[string][]string{
	"rows_read":          {"Rows", "RowsRead"},
	"rows_read_per_call": {"Rows", "RowsRead"},
}

// withOnly returns an event whose struct field i alone is set, to a value that no
// accessor reads as zero.
func withOnly(t *testing.T, i int) Event {
	t.Helper()
	var ev Event
	v := reflect.ValueOf(&ev).Elem().Field(i)
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(int64(7 * time.Second)) // a Duration of whole seconds
	case reflect.Uint64:
		v.SetUint(7)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		v.Set(reflect.ValueOf([]string{"x"}))
	default:
		if v.Type() != reflect.TypeFor[time.Time]() {
			t.Fatalf("Event.%s: no test value for %s", reflect.TypeFor[Event]().Field(i).Name, v.Type())
		}
		v.Set(reflect.ValueOf(time.Unix(7, 0)))
	}
	return ev
}

// reads reports whether f's accessor sees a value in ev: whether it would
// be Known if it were optional.
func reads(f EventField, ev *Event) bool {
	f.Optional = true
	return f.Known(ev)
}

// TestEveryEventFieldIsInTheTable finds, by setting one struct field at a time,
// which struct field each entry reads: each entry must read exactly one, and every
// field of Event must be read by an entry unless it is hidden on purpose. A field
// added to Event without its entry fails here.
func TestEveryEventFieldIsInTheTable(t *testing.T) {
	typ := reflect.TypeFor[Event]()
	readBy := map[string][]string{}
	for _, f := range EventFields() {
		var got []string
		for i := range typ.NumField() {
			ev := withOnly(t, i)
			if reads(f, &ev) {
				got = append(got, typ.Field(i).Name)
			}
		}
		if want, ok := derivedFrom[f.Name]; ok {
			if !slices.Equal(got, want) {
				t.Errorf("%s: reads Event fields %v, want %v", f.Name, got, want)
			}
		} else if len(got) != 1 {
			t.Errorf("%s: reads Event fields %v, want exactly one", f.Name, got)
		}
		for _, sf := range got {
			readBy[sf] = append(readBy[sf], f.Name)
		}
	}
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		_, hidden := hiddenFromRules[name]
		switch {
		case hidden && readBy[name] != nil:
			t.Errorf("Event.%s is hidden from rules but read by %v", name, readBy[name])
		case !hidden && readBy[name] == nil:
			t.Errorf("Event.%s: no entry of the field table reads it: add one to eventFields (or to hiddenFromRules, saying why)", name)
		}
	}
}

func TestFieldTableIsConsistent(t *testing.T) {
	fields := append(EventFields(), ColumnsField)
	var names []string
	for _, f := range fields {
		if slices.Contains(names, f.Name) {
			t.Errorf("%s: listed twice", f.Name)
		}
		names = append(names, f.Name)
		set := map[FieldType]bool{
			FieldString: f.String != nil, FieldInt: f.Int != nil, FieldBool: f.Bool != nil,
			FieldList: f.List != nil, FieldTime: f.Time != nil,
		}
		for typ, isSet := range set {
			if isSet != (typ == f.Type) {
				t.Errorf("%s: of type %d, got the accessor of type %d set=%v", f.Name, f.Type, typ, isSet)
			}
		}
		if (f.Use == UseGroup) != (f.Label != "") {
			t.Errorf("%s: use %d with label %q; a group field needs a label, other fields have none", f.Name, f.Use, f.Label)
		}
		var zero Event
		if f.Known(&zero) == f.Optional {
			t.Errorf("%s: Known on an empty event got %v, want %v (optional %v)", f.Name, f.Known(&zero), !f.Optional, f.Optional)
		}
	}
	if _, ok := LookupEventField(ColumnsField.Name); ok {
		t.Error("columns: found by LookupEventField, want it hidden from rules")
	}
	if f, ok := LookupEventField("relation"); !ok || f.Label != LabelTable {
		t.Errorf("relation: got %+v, %v; want the table label", f, ok)
	}
}

func TestColumnsFieldIsReadOrElseChanged(t *testing.T) {
	tests := []struct {
		ev   Event
		want []string
	}{
		{Event{SensitiveRead: []string{"email"}, Changed: []string{"password_hash"}}, []string{"email"}},
		{Event{Changed: []string{"password_hash"}}, []string{"password_hash"}},
		{Event{}, nil},
	}
	for _, tt := range tests {
		if got := ColumnsField.List(&tt.ev); !slices.Equal(got, tt.want) {
			t.Errorf("%+v: got %v, want %v", tt.ev, got, tt.want)
		}
	}
}
