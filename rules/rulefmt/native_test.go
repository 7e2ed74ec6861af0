package rulefmt

import (
	"slices"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
)

// nativeEvents vary every field the native matcher reads, including the
// empty and zero values has() and the comparisons care about.
func nativeEvents() []model.Event {
	base := []model.Event{
		{},
		{Source: "statements", Database: "app", Role: "mallory", ClientAddr: "203.0.113.7",
			Application: "psql", Operation: "SELECT", Relation: "public.users",
			SensitiveRead: []string{"email", "password_hash"}, SensitiveReferenced: []string{"username"},
			Complete: true, Rows: 5000, Calls: 2, QueryID: -42},
		{Source: "wal", Database: "app", Operation: "UPDATE", Relation: "auth.users",
			Changed: []string{"password_hash"}, Rows: 1000, LSN: 77},
		{Source: "wal", Operation: "TRUNCATE", Relation: "public.users", Complete: true},
		{Source: "catalog", Kind: "role_attribute", Object: "mallory", PID: 12},
		{Source: "activity", Role: "app", Rows: 0, Calls: 0, Running: 90 * time.Second,
			Relation: "public.users", Complete: false, SensitiveRead: []string{"email"}},
		{Source: "statements", Role: "app", Rows: 50, Calls: 1, Relation: "public.accounts",
			SensitiveRead: []string{"email"}, Complete: true, MessagePrefix: "pgtripwire.x"},
	}
	return base
}

// TestNativeMatchesCEL compares the native matcher with the CEL program on
// every expression of the subset, so that the fast path can never disagree
// with the language.
func TestNativeMatchesCEL(t *testing.T) {
	exprs := []string{
		`event.source == "statements" && size(event.sensitive_read) > 0`,
		`"statements" == event.source || event.source == "activity"`,
		`event.source in ["wal", "ddl"] && event.operation == "TRUNCATE"`,
		`event.rows_per_call >= 2500 && event.calls == 2 && event.rows == 5000`,
		`event.rows_per_call > 2500 || event.rows < 10 || event.rows <= 50 || event.calls != 1`,
		`"password_hash" in event.sensitive_read && "username" in event.sensitive_referenced`,
		`"password_hash" in event.changed || (size(event.changed) == 0 && !event.complete)`,
		`event.relation.startsWith("public.") && event.relation.endsWith("users") && event.relation.contains("c.u")`,
		`event.role == "mallory" && event.client_addr == "203.0.113.7" && event.application == "psql"`,
		`event.query_id == -42 && event.complete`,
		`event.complete == false`,
		`has(event.client_addr) && !has(event.lsn) && !has(event.kind)`,
		`has(event.query_id) || has(event.pid) || has(event.message_prefix) || has(event.object)`,
		`event.lsn > 10 && event.pid == 0 && event.running_seconds >= 0`,
		`event.sensitive_read.size() >= 2 && size(event.sensitive_referenced) == 1`,
		`event.kind in ["role_attribute"] && event.object != "postgres"`,
		`event.database < "b" && event.role >= "m" && event.relation > "a"`,
		`true && !false`,
		`event.application.matches("(?i)PSQL|dump") || matches(event.role, "^mal")`,
	}
	for _, expr := range exprs {
		t.Run(expr, func(t *testing.T) {
			r := ruleWithMatch(t, expr)
			if !r.NativeMatch() {
				t.Fatal("got the CEL interpreter, want the native matcher")
			}
			for i, ev := range nativeEvents() {
				want, err := r.matchCEL(&ev)
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := r.MatchEvent(&ev); got != want {
					t.Errorf("event %d: native got %v, CEL %v", i, got, want)
				}
			}
		})
	}
}

func TestNativeFallsBack(t *testing.T) {
	for _, expr := range []string{
		`event.sensitive_read.exists(c, c.endsWith("hash"))`,
		`event.rows + 1 > 10`,
		`event.time > timestamp("2026-11-29T02:00:00Z")`,
		`event.rows > 10 ? true : false`,
		`size(event.role) > 3`,
	} {
		if ruleWithMatch(t, expr).NativeMatch() {
			t.Errorf("%s: got the native matcher, want the CEL interpreter", expr)
		}
	}
}

func TestSources(t *testing.T) {
	tests := []struct {
		expr string
		want []model.Source
	}{
		{`event.source == "statements" && size(event.sensitive_read) > 0`, []model.Source{"statements"}},
		{`event.rows > 0 && "wal" == event.source`, []model.Source{"wal"}},
		{`event.source in ["statements", "activity"] && event.rows > 0`, []model.Source{"statements", "activity"}},
		{`event.source in ["statements", "activity"] && event.source == "activity"`, []model.Source{"activity"}},
		{`event.source == "statements" || event.source == "wal"`, nil},
		{`event.rows > 0`, nil},
		{`!(event.source == "wal")`, nil},
	}
	for _, tt := range tests {
		if got := ruleWithMatch(t, tt.expr).Sources(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.expr, got, tt.want)
		}
	}
}

func BenchmarkMatchNative(b *testing.B) {
	r := ruleWithMatch(b, `event.source == "statements" && size(event.sensitive_read) > 0 && event.rows_per_call >= 1000`)
	ev := nativeEvents()[1]
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := r.MatchEvent(&ev); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
