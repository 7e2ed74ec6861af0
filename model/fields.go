package model

import "time"

// FieldType is the type of an event field as rules see it; it says which accessor of
// an EventField is set.
type FieldType uint8

// Field types.
const (
	FieldString FieldType = iota + 1
	FieldInt
	FieldBool
	FieldList // of strings
	FieldTime
)

// FieldUse is what a rule may do with a field besides reading it in match.
type FieldUse uint8

// Field uses.
const (
	// UseMatch fields are read in match expressions only (time).
	UseMatch FieldUse = iota + 1
	// UseGroup fields also make groups and become alert labels: aggregate.by,
	// first_seen.key, count_distinct.
	UseGroup
	// UseValue fields are also numbers to sum, maximise or compare: aggregate sum and
	// max, a threshold's field.
	UseValue
)

// EventField is one field of Event as rules see it: the name a match expression
// selects (event.<Name>) and a rule file lists (by: [<Name>]), its type and the
// accessor of that type, and the alert label a group by it becomes.
//
// Reading a field through its accessor does not allocate: the rule engine calls
// accessors for every rule on every event.
type EventField struct {
	Name string
	Type FieldType
	Use  FieldUse
	// Label is the alert label a group by the field becomes (relation → table,
	// sensitive_read → columns); "" for fields that are not UseGroup.
	Label string
	// Optional fields are unknown at their zero value (a client address the source
	// cannot see, a query_id of 0): has(event.x) is false and the label is omitted.
	// The other fields always have a value, zero included (0 rows, complete false).
	Optional bool

	// Exactly the accessor of Type is set.
	String func(*Event) string
	Int    func(*Event) int64
	Bool   func(*Event) bool
	List   func(*Event) []string
	Time   func(*Event) time.Time
}

// Known reports whether ev has a value for the field: false only for an Optional
// field at its zero value. It is what has(event.x) means in a match expression.
func (f *EventField) Known(ev *Event) bool {
	if !f.Optional {
		return true
	}
	switch f.Type {
	case FieldString:
		return f.String(ev) != ""
	case FieldInt:
		return f.Int(ev) != 0
	case FieldBool:
		return f.Bool(ev)
	case FieldList:
		return len(f.List(ev)) > 0
	case FieldTime:
		return !f.Time(ev).IsZero()
	}
	return false
}

// eventFields is every field of Event that rules see, in the order of docs/rules.md
// (and of the lists of allowed fields in rule-file errors). Adding a field to Event
// for rules is one entry here: the CEL environment, the native matcher and the
// engine's group keys are derived from it.
//
// Event.Statement is left out on purpose: its text is one value per statement, so it
// is never a label, and matching on redacted text would invite rules that a
// placeholder silently defeats.
var eventFields = []EventField{
	{Name: "time", Type: FieldTime, Use: UseMatch, Optional: true,
		Time: func(e *Event) time.Time { return e.Time }},
	{Name: "source", Type: FieldString, Use: UseGroup, Label: LabelSource, Optional: true,
		String: func(e *Event) string { return string(e.Source) }},
	{Name: "cluster", Type: FieldString, Use: UseGroup, Label: LabelCluster, Optional: true,
		String: func(e *Event) string { return e.Cluster }},
	{Name: "instance", Type: FieldString, Use: UseGroup, Label: LabelInstance, Optional: true,
		String: func(e *Event) string { return e.Instance }},
	{Name: "database", Type: FieldString, Use: UseGroup, Label: LabelDatabase, Optional: true,
		String: func(e *Event) string { return e.Database }},
	{Name: "role", Type: FieldString, Use: UseGroup, Label: LabelRole, Optional: true,
		String: func(e *Event) string { return e.Role }},
	{Name: "application_role", Type: FieldBool, Use: UseGroup, Label: "application_role",
		Bool: func(e *Event) bool { return e.ApplicationRole }},
	{Name: "client_addr", Type: FieldString, Use: UseGroup, Label: LabelClientAddr, Optional: true,
		String: func(e *Event) string { return e.ClientAddr }},
	{Name: "application", Type: FieldString, Use: UseGroup, Label: LabelApplication, Optional: true,
		String: func(e *Event) string { return e.Application }},
	{Name: "operation", Type: FieldString, Use: UseGroup, Label: "operation", Optional: true,
		String: func(e *Event) string { return e.Operation }},
	{Name: "relation", Type: FieldString, Use: UseGroup, Label: LabelTable, Optional: true,
		String: func(e *Event) string { return e.Relation }},
	{Name: "sensitive_read", Type: FieldList, Use: UseGroup, Label: LabelColumns,
		List: func(e *Event) []string { return e.SensitiveRead }},
	{Name: "sensitive_referenced", Type: FieldList, Use: UseGroup, Label: "sensitive_referenced",
		List: func(e *Event) []string { return e.SensitiveReferenced }},
	{Name: "complete", Type: FieldBool, Use: UseGroup, Label: "complete",
		Bool: func(e *Event) bool { return e.Complete }},
	{Name: "rows", Type: FieldInt, Use: UseValue,
		Int: func(e *Event) int64 { return e.Rows }},
	{Name: "calls", Type: FieldInt, Use: UseValue,
		Int: func(e *Event) int64 { return e.Calls }},
	{Name: "rows_per_call", Type: FieldInt, Use: UseValue,
		Int: func(e *Event) int64 { return e.RowsPerCall() }},
	{Name: "rows_read", Type: FieldInt, Use: UseValue,
		Int: func(e *Event) int64 { return e.ReadRows() }},
	{Name: "rows_read_per_call", Type: FieldInt, Use: UseValue,
		Int: func(e *Event) int64 { return e.ReadRowsPerCall() }},
	{Name: "rows_visited", Type: FieldInt, Use: UseValue,
		Int: func(e *Event) int64 { return e.Visited }},
	{Name: "access", Type: FieldString, Use: UseGroup, Label: "access", Optional: true,
		String: func(e *Event) string { return e.Access }},
	{Name: "shapes", Type: FieldList, Use: UseGroup, Label: "shapes",
		List: func(e *Event) []string { return e.Shapes }},
	{Name: "query_id", Type: FieldInt, Use: UseGroup, Label: "query_id", Optional: true,
		Int: func(e *Event) int64 { return e.QueryID }},
	{Name: "lsn", Type: FieldInt, Use: UseGroup, Label: "lsn", Optional: true,
		Int: func(e *Event) int64 { return int64(e.LSN) }},
	// changed becomes the columns label like sensitive_read: a WAL change has no
	// columns read. A group by both keeps the name changed (the engine's choice).
	{Name: "changed", Type: FieldList, Use: UseGroup, Label: LabelColumns,
		List: func(e *Event) []string { return e.Changed }},
	{Name: "message_prefix", Type: FieldString, Use: UseGroup, Label: "message_prefix", Optional: true,
		String: func(e *Event) string { return e.MessagePrefix }},
	{Name: "kind", Type: FieldString, Use: UseGroup, Label: "kind", Optional: true,
		String: func(e *Event) string { return e.Kind }},
	{Name: "object", Type: FieldString, Use: UseGroup, Label: "object", Optional: true,
		String: func(e *Event) string { return e.Object }},
	{Name: "pid", Type: FieldInt, Use: UseGroup, Label: "pid", Optional: true,
		Int: func(e *Event) int64 { return int64(e.PID) }},
	// Whole seconds: rules compare durations as integers, as the docs' examples do.
	{Name: "running_seconds", Type: FieldInt, Use: UseValue,
		Int: func(e *Event) int64 { return int64(e.Running / time.Second) }},
}

// ServerFields are the fields every rule groups by besides those it lists: the server
// an event was observed on. Reads on a primary and on its standby, or in two
// clusters, are different alerts, each naming where the read ran; a rule's window
// therefore counts one server's reads (docs/rules.md says so).
var ServerFields = []string{"cluster", "instance"}

// ColumnsField is the alert contract's columns label as a group field: the sensitive
// columns read, or for a WAL change (which reads none) those changed. It is the
// group of a rule without aggregate, whose alerts carry the contract's labels; it is
// not a field of match expressions or rule files, where sensitive_read and changed
// say which one they mean.
var ColumnsField = EventField{Name: "columns", Type: FieldList, Use: UseGroup, Label: LabelColumns,
	List: func(e *Event) []string {
		if len(e.SensitiveRead) > 0 {
			return e.SensitiveRead
		}
		return e.Changed
	}}

var fieldIndex = func() map[string]*EventField {
	m := make(map[string]*EventField, len(eventFields))
	for i := range eventFields {
		m[eventFields[i].Name] = &eventFields[i]
	}
	return m
}()

// EventFields returns the fields of Event that rules see, in documentation order. The
// slice is the caller's; the accessors are shared.
func EventFields() []EventField {
	return append([]EventField(nil), eventFields...)
}

// LookupEventField returns the field rules call name, and false when there is none.
// ColumnsField is not found: rules cannot name it.
func LookupEventField(name string) (EventField, bool) {
	f, ok := fieldIndex[name]
	if !ok {
		return EventField{}, false
	}
	return *f, true
}
