package builtin

import (
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/event"
)

func walUpdate(rows int64, changed []string, complete bool) event.Event {
	return event.Event{Source: event.SourceWAL, Operation: "UPDATE", Database: "app", Relation: "public.users",
		Rows: rows, Calls: 1, Changed: changed, Complete: complete, LSN: 0x1_6B374D48}
}

func TestMassChange(t *testing.T) {
	tests := []struct {
		name string
		ev   event.Event
		want bool
	}{
		{"20,000 password hashes in one transaction", walUpdate(20_000, []string{"password_hash"}, true), true},
		{"one-by-one password resets", walUpdate(1, []string{"password_hash"}, true), false},
		{"a bulk update of non-sensitive columns", walUpdate(50_000, nil, true), false},
		{"changed columns unknown (no REPLICA IDENTITY FULL)", walUpdate(5_000, nil, false), true},
		{"a bulk delete is not a change of credentials", func() event.Event { e := walUpdate(5000, nil, true); e.Operation = "DELETE"; return e }(), false},
		{"a statements event", func() event.Event {
			e := walUpdate(5000, []string{"email"}, true)
			e.Source = event.SourceStatements
			return e
		}(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NewMassChange(1000, time.Minute).Eval(time.Now(), tt.ev)
			if (len(got) == 1) != tt.want {
				t.Fatalf("got %v, want fired=%v", got, tt.want)
			}
			if tt.want && (got[0].Labels["table"] != "public.users" || got[0].Labels["source"] != "wal" || got[0].Value != float64(tt.ev.Rows)) {
				t.Fatalf("got %+v, want table, source=wal and the rows", got[0])
			}
		})
	}
}

// Reads rules must not mistake a change for a read.
func TestReadRulesIgnoreWALEvents(t *testing.T) {
	ev := walUpdate(50_000, []string{"password_hash"}, false)
	if got := (Pack{NewBulkRead(1000, time.Minute), newSweep()}).Eval(time.Now(), ev); len(got) != 0 {
		t.Fatalf("got %v for a WAL update, want no read alert", got)
	}
}

func TestDeleteAndTruncateRules(t *testing.T) {
	del := walUpdate(5000, nil, true)
	del.Operation = "DELETE"
	trunc := walUpdate(1, nil, true)
	trunc.Operation = "TRUNCATE"
	small := walUpdate(10, nil, true)
	small.Operation = "DELETE"
	tests := []struct {
		name string
		rule *MassChange
		ev   event.Event
		want bool
	}{
		{"5,000 users deleted at once", NewMassDelete(1000, time.Minute), del, true},
		{"ten accounts closed", NewMassDelete(1000, time.Minute), small, false},
		{"a delete is not a truncate", NewTruncate(time.Minute), del, false},
		{"the users table truncated", NewTruncate(time.Minute), trunc, true},
		{"an update is not a delete", NewMassDelete(1000, time.Minute), walUpdate(5000, []string{"email"}, true), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.rule.Eval(time.Now(), tt.ev)
			if (len(got) == 1) != tt.want {
				t.Fatalf("got %v, want fired=%v", got, tt.want)
			}
			if tt.want && got[0].Rule != tt.rule.name {
				t.Fatalf("got rule %s, want %s", got[0].Rule, tt.rule.name)
			}
		})
	}
}
