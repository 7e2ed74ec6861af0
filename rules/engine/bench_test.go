package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// benchPack is shaped like the default pack: ten rules over statements,
// WAL and catalog events, with thresholds, windows, first-seen and baseline.
const benchPack = `      - name: SensitiveBulkRead
        description: d
        severity: critical
        match: event.source == "statements" && event.calls > 0 && (size(event.sensitive_read) > 0 || !event.complete)
        condition:
          threshold: {field: rows_per_call, op: ">=", value: 1000}
      - name: SensitivePaginatedSweep
        description: d
        severity: critical
        match: event.source == "statements" && size(event.sensitive_read) > 0 && event.rows_per_call >= 100 && event.rows_per_call < 1000
        aggregate: {function: sum, field: rows, window: 10m, by: [database, relation, role, client_addr, application]}
        condition:
          threshold: {op: ">=", value: 10000}
      - name: SensitiveCopy
        description: d
        severity: critical
        match: event.source in ["statements", "copy"] && event.operation == "COPY" && size(event.sensitive_read) > 0
      - name: FirstSensitiveReadByClient
        description: d
        severity: info
        match: event.source == "statements" && size(event.sensitive_read) > 0
        condition:
          first_seen: {key: [role, client_addr, application, relation], learn_for: 1h, forget_after: 90d}
      - name: SensitiveReadVolumeAboveBaseline
        description: d
        severity: warning
        match: event.source == "statements" && size(event.sensitive_read) > 0
        aggregate: {function: sum, field: rows, window: 1h, by: [role]}
        condition:
          baseline: {learn_for: 7d, z_score: 4, floor: 10000}
      - name: MassCredentialChange
        description: d
        severity: critical
        match: event.source == "wal" && event.operation == "UPDATE" && (size(event.changed) > 0 || !event.complete)
        aggregate: {function: sum, field: rows, window: 1m, by: [database, relation]}
        condition:
          threshold: {op: ">=", value: 1000}
      - name: MassDelete
        description: d
        severity: critical
        match: event.source == "wal" && event.operation == "DELETE"
        aggregate: {function: sum, field: rows, window: 1m, by: [database, relation]}
        condition:
          threshold: {op: ">=", value: 1000}
      - name: SensitiveTableTruncated
        description: d
        severity: critical
        match: event.source == "wal" && event.operation == "TRUNCATE"
      - name: RoleGainedSuperuser
        description: d
        severity: critical
        match: event.source == "catalog" && event.kind == "role_attribute"
      - name: ManyTablesByOneRole
        description: d
        severity: warning
        match: event.source == "statements" && size(event.sensitive_read) > 0
        aggregate: {function: count_distinct, field: relation, window: 1h, by: [role]}
        condition:
          threshold: {op: ">", value: 20}
`

// benchEvents is a realistic mix: mostly login lookups (one row), signups
// and admin listings, some WAL changes, a few catalog events.
func benchEvents() []model.Event {
	var evs []model.Event
	for i := range 1000 {
		role := fmt.Sprintf("app%d", i%20)
		addr := fmt.Sprintf("10.0.%d.%d", i%4, i%50)
		switch {
		case i%10 < 6: // login lookup
			evs = append(evs, model.Event{Source: "statements", Database: "app", Role: role, ClientAddr: addr,
				Application: "web", Operation: "SELECT", Relation: "public.users",
				SensitiveRead: []string{"password_hash"}, SensitiveReferenced: []string{"email"},
				Complete: true, Rows: 200, Calls: 200, QueryID: int64(i % 30)})
		case i%10 == 6: // admin listing
			evs = append(evs, model.Event{Source: "statements", Database: "app", Role: "admin", ClientAddr: "10.1.0.1",
				Application: "admin", Operation: "SELECT", Relation: "public.users",
				SensitiveRead: []string{"email", "username"}, Complete: true, Rows: 50, Calls: 1, QueryID: 7})
		case i%10 == 7: // non-sensitive statement
			evs = append(evs, model.Event{Source: "statements", Database: "app", Role: role, Operation: "SELECT",
				Relation: "public.orders", Complete: true, Rows: 10, Calls: 1})
		case i%10 == 8: // WAL insert/update
			evs = append(evs, model.Event{Source: "wal", Database: "app", Operation: "UPDATE",
				Relation: "public.users", Changed: []string{"password_hash"}, Complete: true, Rows: 1, LSN: uint64(i)})
		default:
			if i%100 == 99 {
				evs = append(evs, model.Event{Source: "catalog", Kind: "slot_created", Object: "s"})
			} else {
				evs = append(evs, model.Event{Source: "wal", Database: "app", Operation: "INSERT",
					Relation: "public.users", Rows: 1, Complete: true, LSN: uint64(i)})
			}
		}
	}
	return evs
}

// BenchmarkEngine reports the cost of one event through a pack of ten
// rules: ns/op and allocs/op are per event.
func BenchmarkEngine(b *testing.B) {
	h := newHarness(b, benchPack, Options{})
	for _, rs := range h.e.rules {
		if !rs.rule.NativeMatch() {
			b.Fatalf("rule %s runs in the CEL interpreter; the figures would not be those of the pack", rs.rule.Name)
		}
	}
	evs := benchEvents()
	now := t0
	for i, ev := range evs { // warm up: every group exists
		h.e.Eval(now.Add(time.Duration(i)*time.Millisecond), ev)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		now = now.Add(time.Microsecond)
		h.e.Eval(now, evs[i%len(evs)])
		i++
		if i%1_000_000 == 0 {
			h.e.Tick(now)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
}

// BenchmarkEngineDefaultPack runs the same events through the default pack
// (rules/default.yml), whatever it holds today.
func BenchmarkEngineDefaultPack(b *testing.B) {
	f, errs := rulefmt.ParseFile("../default.yml")
	if errs != nil {
		b.Skipf("default pack: %v", errs)
	}
	e, err := New(f.Groups, Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, rs := range e.rules {
		if !rs.rule.NativeMatch() {
			b.Logf("rule %s runs in the CEL interpreter", rs.rule.Name)
		}
	}
	evs := benchEvents()
	now := t0
	for i, ev := range evs {
		e.Eval(now.Add(time.Duration(i)*time.Millisecond), ev)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		now = now.Add(time.Microsecond)
		e.Eval(now, evs[i%len(evs)])
		i++
		if i%1_000_000 == 0 {
			e.Tick(now)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
	b.ReportMetric(float64(len(e.rules)), "rules")
}

// TestEvalDoesNotAllocate keeps BenchmarkEngine's 0 allocs/event a
// property of the tests: an allocation per event is easy to add unseen (a
// pointer passed through the kind interface escapes).
func TestEvalDoesNotAllocate(t *testing.T) {
	h := newHarness(t, benchPack, Options{})
	evs := benchEvents()
	now := t0
	for i, ev := range evs { // every group exists
		h.e.Eval(now.Add(time.Duration(i)*time.Millisecond), ev)
	}
	i := 0
	allocs := testing.AllocsPerRun(len(evs), func() {
		now = now.Add(time.Microsecond)
		h.e.Eval(now, evs[i%len(evs)])
		i++
	})
	if allocs != 0 {
		t.Errorf("got %g allocations per event, want 0", allocs)
	}
}
