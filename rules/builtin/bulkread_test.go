package builtin

import (
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/alert"
	"github.com/pgtripwire/pgtripwire/detector/event"
)

func dump(role string, rows, calls int64) event.Event {
	return event.Event{
		Source: event.SourceStatements, Database: "app", Role: role, Operation: "SELECT",
		Relation: "public.users", SensitiveRead: []string{"username", "email", "password_hash"},
		Complete: true, Rows: rows, Calls: calls, QueryID: 42,
	}
}

func TestBulkReadFiresOnceAndResolves(t *testing.T) {
	r := NewBulkRead(1000, 5*time.Minute)
	t0 := time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)

	got := r.Eval(t0, dump("mallory", 50000, 1))
	if len(got) != 1 {
		t.Fatalf("got %d transitions, want 1 firing", len(got))
	}
	a := got[0]
	want := map[string]string{
		"table": "public.users", "role": "mallory", "database": "app",
		"columns": "email,password_hash,username", "source": "statements",
	}
	if len(a.Labels) != len(want) {
		t.Errorf("got labels %v, want %v (unknown labels omitted)", a.Labels, want)
	}
	for k, v := range want {
		if a.Labels[k] != v {
			t.Errorf("label %s: got %q, want %q", k, a.Labels[k], v)
		}
	}
	if a.State != alert.StateFiring || a.Value != 50000 || a.Severity != alert.SeverityCritical {
		t.Errorf("got state %s value %v severity %s, want firing 50000 critical", a.State, a.Value, a.Severity)
	}
	if a.Annotations["summary"] == "" || a.Annotations["runbook_url"] == "" || a.Annotations["description"] == "" {
		t.Errorf("got annotations %v, want summary, description and runbook_url", a.Annotations)
	}

	if got := r.Eval(t0.Add(time.Minute), dump("mallory", 60000, 1)); len(got) != 0 {
		t.Fatalf("got %v while already firing, want no new transition", got)
	}
	if got := r.Tick(t0.Add(5 * time.Minute)); len(got) != 0 {
		t.Fatalf("got %v 4m after the last match, want nothing yet", got)
	}
	got = r.Tick(t0.Add(6 * time.Minute))
	if len(got) != 1 || got[0].State != alert.StateResolved || got[0].Fingerprint != a.Fingerprint {
		t.Fatalf("got %v, want one resolved transition of %s", got, a.Fingerprint)
	}
	if got[0].Value != 60000 {
		t.Errorf("resolved value: got %v, want the largest seen, 60000", got[0].Value)
	}
	if got := r.Eval(t0.Add(7*time.Minute), dump("mallory", 50000, 1)); len(got) != 1 {
		t.Fatalf("got %d transitions after resolution, want the alert to fire again", len(got))
	}
}

func TestBulkReadMatch(t *testing.T) {
	incomplete := dump("mallory", 5000, 1)
	incomplete.Complete, incomplete.SensitiveRead = false, nil
	unknownTable := incomplete
	unknownTable.Relation = ""
	referencedOnly := dump("app", 5000, 1)
	referencedOnly.SensitiveRead, referencedOnly.SensitiveReferenced = nil, []string{"email"}
	tests := []struct {
		name string
		ev   event.Event
		want bool
	}{
		{"dump", dump("mallory", 50000, 1), true},
		{"exactly the threshold", dump("mallory", 1000, 1), true},
		{"login lookups: many calls of one row", dump("app", 2000, 2000), false},
		{"pages of 500", dump("mallory", 500, 1), false},
		{"no calls", dump("mallory", 5000, 0), false},
		{"unclassifiable statement on a sensitive table", incomplete, true},
		{"unclassifiable statement, table unknown", unknownTable, true},
		{"count over a predicate on email", referencedOnly, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := len(NewBulkRead(1000, time.Minute).Eval(time.Now(), tt.ev)) == 1
			if got != tt.want {
				t.Fatalf("got fired=%v, want %v", got, tt.want)
			}
		})
	}
}

func TestBulkReadGroupsByRole(t *testing.T) {
	r := NewBulkRead(1000, time.Minute)
	now := time.Now()
	a := r.Eval(now, dump("mallory", 5000, 1))
	b := r.Eval(now, dump("eve", 5000, 1))
	if len(a) != 1 || len(b) != 1 || a[0].Fingerprint == b[0].Fingerprint {
		t.Fatalf("got %v and %v, want two alerts with distinct fingerprints", a, b)
	}
}

func TestBulkReadOmitsUnknownLabels(t *testing.T) {
	ev := dump("", 5000, 1)
	ev.Relation, ev.Complete, ev.SensitiveRead = "", false, nil
	got := NewBulkRead(1000, time.Minute).Eval(time.Now(), ev)
	if len(got) != 1 {
		t.Fatalf("got %d alerts, want 1", len(got))
	}
	for _, k := range []string{"table", "role", "columns", "client_addr", "application"} {
		if v, ok := got[0].Labels[k]; ok {
			t.Errorf("label %s=%q present, want unknown labels omitted", k, v)
		}
	}
	if s := got[0].Annotations["summary"]; !strings.Contains(s, "could not be classified") {
		t.Errorf("summary %q does not say the statement could not be classified", s)
	}
}
