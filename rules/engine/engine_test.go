package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// parseRules parses one rule file body made of rule entries (indented as
// list items under a group's rules).
func parseRules(t testing.TB, rules string) []rulefmt.Group {
	t.Helper()
	f, errs := rulefmt.Parse("test.yml", []byte("groups:\n  - name: g\n    rules:\n"+rules))
	if errs != nil {
		t.Fatalf("parse rules: %v", errs)
	}
	return f.Groups
}

type harness struct {
	t   testing.TB
	e   *Engine
	reg *prometheus.Registry
	got []model.Alert // every transition returned, in order
}

func newHarness(t testing.TB, rules string, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, reg: prometheus.NewRegistry()}
	opts.Registerer = h.reg
	e, err := New(parseRules(t, rules), opts)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	return h
}

func (h *harness) eval(at time.Duration, ev model.Event) []model.Alert {
	out := h.e.Eval(t0.Add(at), ev)
	h.got = append(h.got, out...)
	return out
}

// tickTo ticks every second from..to (inclusive) and returns the transitions.
func (h *harness) tickTo(from, to time.Duration) []model.Alert {
	var out []model.Alert
	for at := from; at <= to; at += time.Second {
		out = append(out, h.e.Tick(t0.Add(at))...)
	}
	h.got = append(h.got, out...)
	return out
}

// summary is a transition in short: "state rule at labels value".
func summary(a model.Alert) string {
	var ls []string
	for _, k := range slices.Sorted(maps.Keys(a.Labels)) {
		ls = append(ls, k+"="+a.Labels[k])
	}
	return fmt.Sprintf("%s %s @%s {%s} %g", a.State, a.Rule, a.Time.Sub(t0), strings.Join(ls, ","), a.Value)
}

func summaries(as []model.Alert) []string {
	out := []string{}
	for _, a := range as {
		out = append(out, summary(a))
	}
	return out
}

func checkTransitions(t testing.TB, got []model.Alert, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if g := summaries(got); !slices.Equal(g, want) {
		t.Errorf("transitions:\ngot  %q\nwant %q", g, want)
	}
}

func page(role string, rows int64) model.Event {
	return model.Event{
		Source: "statements", Database: "app", Role: role, Relation: "public.users",
		SensitiveRead: []string{"password_hash", "email"}, Complete: true, Rows: rows, Calls: 1,
	}
}

const sweepRule = `      - name: Sweep
        description: d
        severity: critical
        match: 'event.source == "statements" && size(event.sensitive_read) > 0'
        aggregate: {function: sum, field: rows, window: 10m, by: [database, relation, role, sensitive_read]}
        condition:
          threshold: {op: ">=", value: 10000}
        annotations:
          summary: 'Sweep of {{ .Labels.relation }} ({{ .Labels.table }}) by {{ .Labels.role }}: {{ .Value }} rows'
`

func TestThresholdWindow(t *testing.T) {
	h := newHarness(t, sweepRule, Options{})
	for i := range 40 {
		h.eval(time.Duration(i)*200*time.Millisecond, page("intruder", 500))
	}
	// An admin page listing 50 users every second stays far below.
	for i := range 20 {
		h.eval(time.Duration(i)*time.Second, page("admin", 50))
	}
	h.tickTo(time.Second, 9*time.Minute)
	checkTransitions(t, h.got,
		"firing Sweep @3.8s {columns=email,password_hash,database=app,role=intruder,source=statements,table=public.users} 10000")
	fired := h.got[0]
	if got, want := fired.Annotations["summary"], "Sweep of public.users (public.users) by intruder: 10000 rows"; got != want {
		t.Errorf("summary: got %q, want %q", got, want)
	}
	if got, want := fired.Fingerprint, model.Fingerprint("Sweep", fired.Labels); got != want {
		t.Errorf("fingerprint: got %s, want %s", got, want)
	}
	// The pages leave the 10m window between 9m50s and 10m after they came:
	// the alert resolves then, with the value that no longer meets it.
	h.got = nil
	h.tickTo(9*time.Minute+time.Second, 11*time.Minute)
	if len(h.got) != 1 || h.got[0].State != model.StateResolved || h.got[0].Fingerprint != fired.Fingerprint {
		t.Fatalf("got %q, want one resolution of the firing alert", summaries(h.got))
	}
	if at := h.got[0].Time.Sub(t0); at < 9*time.Minute+50*time.Second || at > 10*time.Minute+4*time.Second {
		t.Errorf("resolved at %s, want between 9m50s and 10m4s", at)
	}
}

func TestAggregateFunctions(t *testing.T) {
	rule := func(agg, op string, value int) string {
		return fmt.Sprintf(`      - name: R
        description: d
        severity: info
        match: 'event.source == "statements"'
        aggregate: {%s, window: 1m, by: [role]}
        condition:
          threshold: {op: "%s", value: %d}
`, agg, op, value)
	}
	evs := []model.Event{page("a", 10), page("a", 300), page("a", 20)}
	evs[1].Relation = "public.orders"
	tests := []struct {
		name, agg string
		value     int
		want      []string
	}{
		{"count", "function: count", 3, []string{"firing R @2s {role=a,source=statements} 3"}},
		{"sum", "function: sum, field: rows", 330, []string{"firing R @2s {role=a,source=statements} 330"}},
		{"max", "function: max, field: rows", 300, []string{"firing R @1s {role=a,source=statements} 300"}},
		{"count_distinct", "function: count_distinct, field: relation", 2, []string{"firing R @1s {role=a,source=statements} 2"}},
		{"count below", "function: count", 4, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, rule(tt.agg, ">=", tt.value), Options{})
			for i, ev := range evs {
				h.eval(time.Duration(i)*time.Second, ev)
			}
			checkTransitions(t, h.got, tt.want...)
		})
	}
}

func TestForAndKeepFiringFor(t *testing.T) {
	rule := `      - name: R
        description: d
        severity: warning
        match: 'event.rows > 0'
        aggregate: {function: count, window: 1m}
        condition:
          threshold: {op: ">=", value: 1}
        for: 30s
        keep_firing_for: 2m
`
	h := newHarness(t, rule, Options{})
	h.eval(0, page("a", 1))
	h.tickTo(time.Second, 29*time.Second)
	checkTransitions(t, h.got) // pending is never returned
	if got := testutil.ToFloat64(h.e.m.alerts.WithLabelValues("R", "pending")); got != 1 {
		t.Errorf("pending gauge: got %g, want 1", got)
	}
	h.tickTo(30*time.Second, 30*time.Second)
	checkTransitions(t, h.got, "firing R @30s {} 1")
	// The event leaves the 1m window at ~59-60s; the alert keeps firing for
	// 2m more.
	h.got = nil
	h.tickTo(31*time.Second, 5*time.Minute)
	if len(h.got) != 1 {
		t.Fatalf("got %q, want one resolution", summaries(h.got))
	}
	if at := h.got[0].Time.Sub(t0); at < 2*time.Minute+59*time.Second || at > 3*time.Minute {
		t.Errorf("resolved at %s, want 2m59s-3m (window 1m + keep_firing_for 2m)", at)
	}

	t.Run("pending that stops holding never fires", func(t *testing.T) {
		h := newHarness(t, strings.Replace(rule, "for: 30s", "for: 2m", 1), Options{})
		h.eval(0, page("a", 1))
		h.tickTo(time.Second, 5*time.Minute)
		checkTransitions(t, h.got)
	})
}

func TestEventRule(t *testing.T) {
	rule := `      - name: Bulk
        description: d
        severity: critical
        match: 'event.source == "statements" && size(event.sensitive_read) > 0'
        condition:
          threshold: {field: rows_per_call, op: ">=", value: 1000}
        annotations: {summary: '{{ .Value }} rows of {{ .Labels.columns }}'}
`
	t.Run("fires once per group, resolves after ResolveAfter", func(t *testing.T) {
		h := newHarness(t, rule, Options{ResolveAfter: time.Minute})
		h.eval(0, page("a", 999))
		h.eval(time.Second, page("a", 5000))
		h.eval(2*time.Second, page("a", 7000)) // same group: no second firing
		ev := page("b", 2000)
		ev.ClientAddr, ev.Application = "203.0.113.7", "psql"
		h.eval(3*time.Second, ev)
		h.tickTo(4*time.Second, 2*time.Minute)
		checkTransitions(t, h.got,
			"firing Bulk @1s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 5000",
			"firing Bulk @3s {application=psql,client_addr=203.0.113.7,columns=email,password_hash,database=app,role=b,source=statements,table=public.users} 2000",
			"resolved Bulk @1m2s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 7000",
			"resolved Bulk @1m3s {application=psql,client_addr=203.0.113.7,columns=email,password_hash,database=app,role=b,source=statements,table=public.users} 2000",
		)
		if got, want := h.got[0].Annotations["summary"], "5000 rows of email,password_hash"; got != want {
			t.Errorf("summary: got %q, want %q", got, want)
		}
	})
	t.Run("keep_firing_for replaces ResolveAfter", func(t *testing.T) {
		h := newHarness(t, rule+"        keep_firing_for: 10s\n", Options{ResolveAfter: time.Minute})
		h.eval(0, page("a", 5000))
		h.tickTo(time.Second, 20*time.Second)
		checkTransitions(t, h.got,
			"firing Bulk @0s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 5000",
			"resolved Bulk @10s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 5000")
	})
	t.Run("without condition every match fires; WAL columns are the changed ones", func(t *testing.T) {
		h := newHarness(t, `      - name: Truncate
        description: d
        severity: critical
        match: event.source == "wal" && event.operation in ["TRUNCATE", "UPDATE"]
`, Options{})
		h.eval(0, model.Event{Source: "wal", Database: "app", Operation: "TRUNCATE", Relation: "public.users"})
		h.eval(time.Second, model.Event{Source: "wal", Database: "app", Operation: "UPDATE", Relation: "public.users", Changed: []string{"password_hash"}, Rows: 3})
		checkTransitions(t, h.got,
			"firing Truncate @0s {database=app,source=wal,table=public.users} 0",
			"firing Truncate @1s {columns=password_hash,database=app,source=wal,table=public.users} 3")
	})
}

func TestBaseline(t *testing.T) {
	rule := `      - name: Volume
        description: d
        severity: warning
        match: 'size(event.sensitive_read) > 0'
        aggregate: {function: sum, field: rows, window: 10m, by: [role]}
        condition:
          baseline: {learn_for: 2h, z_score: 3, floor: 1000}
`
	// 100 to 300 rows every 10 minutes for 3 hours: the usual.
	usual := func(h *harness, until time.Duration) {
		for at := time.Duration(0); at < until; at += 10 * time.Minute {
			h.eval(at+time.Minute, page("app", 100+int64(at/(10*time.Minute))%3*100))
			h.tickTo(at+time.Minute+time.Second, at+10*time.Minute)
		}
	}
	t.Run("a spike after learning fires", func(t *testing.T) {
		h := newHarness(t, rule, Options{})
		usual(h, 3*time.Hour)
		checkTransitions(t, h.got)
		g := h.e.rules[0].groups
		if len(g) != 1 {
			t.Fatalf("groups: got %d, want 1", len(g))
		}
		for _, g := range g {
			if g.base.samples < 15 || g.base.mean < 100 || g.base.mean > 300 {
				t.Errorf("baseline: got %d samples, mean %g; want ~18 samples, mean in 100..300", g.base.samples, g.base.mean)
			}
		}
		h.eval(3*time.Hour+time.Minute, page("app", 5000))
		checkTransitions(t, h.got, "firing Volume @3h1m0s {role=app} 5000")
	})
	t.Run("above baseline but below floor is silent", func(t *testing.T) {
		h := newHarness(t, rule, Options{})
		usual(h, 3*time.Hour)
		h.eval(3*time.Hour+time.Minute, page("app", 900))
		checkTransitions(t, h.got)
	})
	t.Run("nothing fires while learning", func(t *testing.T) {
		h := newHarness(t, rule, Options{})
		usual(h, time.Hour)
		h.eval(time.Hour+time.Minute, page("app", 50000))
		checkTransitions(t, h.got)
	})
	t.Run("a new group after learning fires at the floor", func(t *testing.T) {
		h := newHarness(t, rule, Options{})
		usual(h, 3*time.Hour)
		h.eval(3*time.Hour+time.Minute, page("intruder", 999))
		h.eval(3*time.Hour+2*time.Minute, page("intruder", 1))
		checkTransitions(t, h.got, "firing Volume @3h2m0s {role=intruder} 1000")
	})
}

func TestFirstSeen(t *testing.T) {
	rule := `      - name: NewClient
        description: d
        severity: info
        match: 'size(event.sensitive_read) > 0 && has(event.client_addr)'
        condition:
          first_seen: {key: [role, client_addr, relation], learn_for: 1h, forget_after: 24h}
`
	from := func(role, addr string) model.Event {
		ev := page(role, 1)
		ev.ClientAddr = addr
		return ev
	}
	h := newHarness(t, rule, Options{ResolveAfter: time.Minute})
	h.eval(0, from("app", "10.0.0.1"))
	h.eval(30*time.Minute, from("app", "10.0.0.2")) // during learning: normal
	h.eval(2*time.Hour, from("app", "10.0.0.1"))
	h.eval(2*time.Hour, from("app", "10.0.0.2"))
	h.eval(2*time.Hour+time.Second, from("mallory", "198.51.100.9")) // new
	h.eval(2*time.Hour+2*time.Second, from("mallory", "198.51.100.9"))
	h.tickTo(2*time.Hour+3*time.Second, 2*time.Hour+2*time.Minute)
	checkTransitions(t, h.got,
		"firing NewClient @2h0m1s {client_addr=198.51.100.9,role=mallory,table=public.users} 1",
		"resolved NewClient @2h1m1s {client_addr=198.51.100.9,role=mallory,table=public.users} 1")
	// Not seen for more than forget_after: new again.
	h.got = nil
	h.tickTo(26*time.Hour+time.Minute, 26*time.Hour+time.Minute)
	h.eval(26*time.Hour+2*time.Minute, from("app", "10.0.0.2"))
	checkTransitions(t, h.got, "firing NewClient @26h2m0s {client_addr=10.0.0.2,role=app,table=public.users} 1")
}

func TestExceptions(t *testing.T) {
	rule := `      - name: Bulk
        description: d
        severity: critical
        match: 'event.rows >= 1000'
        exceptions:
          - {role: etl, application: nightly, expires: 2026-01-02}
          - {client_cidr: 10.20.0.0/16}
          - {queryid: 42, database: app}
`
	ev := func(role, app, addr string, qid int64) model.Event {
		e := page(role, 5000)
		e.Application, e.ClientAddr, e.QueryID = app, addr, qid
		return e
	}
	tests := []struct {
		name  string
		at    time.Duration
		ev    model.Event
		fires bool
	}{
		{"allowed role and application", time.Hour, ev("etl", "nightly", "", 0), false},
		{"role alone is not the tuple", time.Hour, ev("etl", "psql", "", 0), true},
		{"expired exception", 49 * time.Hour, ev("etl", "nightly", "", 0), true},
		{"client in the prefix", time.Hour, ev("x", "", "10.20.3.4", 0), false},
		{"client with /32 in the prefix", time.Hour, ev("x", "", "10.20.3.4/32", 0), false},
		{"client outside the prefix", time.Hour, ev("x", "", "10.21.3.4", 0), true},
		{"unknown client", time.Hour, ev("x", "", "", 0), true},
		{"query id and database", time.Hour, ev("x", "", "", 42), false},
		{"query id elsewhere", time.Hour, func() model.Event { e := ev("x", "", "", 42); e.Database = "other"; return e }(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, rule, Options{})
			if got := len(h.eval(tt.at, tt.ev)) == 1; got != tt.fires {
				t.Errorf("fires: got %v, want %v", got, tt.fires)
			}
			h.e.Tick(t0.Add(tt.at))
			wantExcepted := 1.0
			if tt.fires {
				wantExcepted = 0
			}
			if got := testutil.ToFloat64(h.e.m.excepted.WithLabelValues("Bulk")); got != wantExcepted {
				t.Errorf("excepted events: got %g, want %g", got, wantExcepted)
			}
			wantExpired := 0.0
			if tt.at > 24*time.Hour {
				wantExpired = 1
			}
			if got := testutil.ToFloat64(h.e.m.expired.WithLabelValues("Bulk")); got != wantExpired {
				t.Errorf("expired exceptions: got %g, want %g", got, wantExpired)
			}
		})
	}
}

func TestShadow(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	e, err := New(parseRules(t, `      - name: Tryout
        description: d
        severity: critical
        mode: shadow
        match: 'event.rows >= 1000'
`), Options{Logger: zap.New(core), Registerer: reg, ResolveAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var got []model.Alert
	got = append(got, e.Eval(t0, page("a", 5000))...)
	for at := time.Second; at <= 2*time.Minute; at += time.Second {
		got = append(got, e.Tick(t0.Add(at))...)
	}
	checkTransitions(t, got)
	if n := testutil.ToFloat64(e.m.shadowAlerts.WithLabelValues("Tryout")); n != 1 {
		t.Errorf("shadow alerts: got %g, want 1", n)
	}
	var states []string
	for _, l := range logs.FilterMessage("shadow rule alert (not delivered)").All() {
		states = append(states, l.ContextMap()["state"].(string))
	}
	if want := []string{"firing", "resolved"}; !slices.Equal(states, want) {
		t.Errorf("shadow log lines: got %v, want %v", states, want)
	}
	if _, ok := e.Rules()["Tryout"]; ok {
		t.Error("Rules() lists the shadow rule; its alerts are never returned")
	}
}

func TestOverflow(t *testing.T) {
	h := newHarness(t, sweepRule, Options{MaxGroups: 2, ResolveAfter: time.Minute})
	for i, role := range []string{"a", "b", "c", "d"} {
		h.eval(time.Duration(i)*time.Second, page(role, 6000))
	}
	// c and d share the overflow group: 12000 rows fire it.
	checkTransitions(t, h.got,
		"firing RuleGroupOverflow @2s {rule=Sweep} 2",
		"firing Sweep @3s {overflow=true,source=statements} 12000")
	h.e.Tick(t0.Add(4 * time.Second))
	if got := testutil.ToFloat64(h.e.m.overflow.WithLabelValues("Sweep")); got != 2 {
		t.Errorf("overflow counter: got %g, want 2", got)
	}
	if got := testutil.ToFloat64(h.e.m.groups.WithLabelValues("Sweep")); got != 3 {
		t.Errorf("groups gauge: got %g, want 3 (2 and the overflow group)", got)
	}
	h.got = nil
	h.tickTo(5*time.Second, 70*time.Second)
	checkTransitions(t, h.got, "resolved RuleGroupOverflow @1m3s {rule=Sweep} 2")
	if _, ok := h.e.Rules()[OverflowRuleName]; !ok {
		t.Error("Rules() lacks RuleGroupOverflow")
	}

	t.Run("first_seen forgets the oldest key", func(t *testing.T) {
		h := newHarness(t, `      - name: New
        description: d
        severity: info
        match: 'true'
        condition:
          first_seen: {key: [role], learn_for: 1s}
`, Options{MaxGroups: 2, ResolveAfter: 500 * time.Millisecond})
		h.eval(0, page("a", 1))
		h.eval(time.Second, page("b", 1))   // after learning: new
		h.eval(2*time.Second, page("c", 1)) // full: forgets a
		h.got = append(h.got, h.e.Tick(t0.Add(2500*time.Millisecond))...)
		h.eval(3*time.Second, page("a", 1)) // new again, forgets b
		h.eval(3*time.Second, page("c", 1)) // still known
		checkTransitions(t, h.got,
			"firing New @1s {role=b} 1",
			"firing RuleGroupOverflow @2s {rule=New} 2",
			"firing New @2s {role=c} 1",
			"resolved New @2.5s {role=c} 1", // a tick's transitions are in fingerprint order
			"resolved New @2.5s {role=b} 1",
			"resolved RuleGroupOverflow @2.5s {rule=New} 2",
			"firing RuleGroupOverflow @3s {rule=New} 2",
			"firing New @3s {role=a} 1")
	})
}

func TestReload(t *testing.T) {
	h := newHarness(t, sweepRule, Options{})
	h.eval(0, page("a", 20000))
	checkTransitions(t, h.got, "firing Sweep @0s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 20000")

	// A new annotation and threshold-independent changes keep the state.
	changed := strings.Replace(sweepRule, "severity: critical", "severity: warning", 1)
	if err := h.e.Reload(parseRules(t, changed)); err != nil {
		t.Fatal(err)
	}
	h.got = nil
	h.eval(time.Second, page("a", 500))
	h.tickTo(2*time.Second, 5*time.Second)
	checkTransitions(t, h.got)

	// A new window is a new definition: the firing alert resolves, reporting
	// the peak it reached while firing, and the rule starts counting afresh.
	if err := h.e.Reload(parseRules(t, strings.Replace(sweepRule, "window: 10m", "window: 1h", 1))); err != nil {
		t.Fatal(err)
	}
	h.tickTo(6*time.Second, 6*time.Second)
	checkTransitions(t, h.got, "resolved Sweep @6s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 20500")

	t.Run("a bad reload changes nothing", func(t *testing.T) {
		bad := parseRules(t, sweepRule+strings.Replace(sweepRule, "name: Sweep", "name: "+OverflowRuleName, 1))
		if err := h.e.Reload(bad); err == nil {
			t.Fatal("got no error for a reserved rule name")
		}
		if _, ok := h.e.Rules()["Sweep"]; !ok {
			t.Error("the old rules are gone")
		}
	})
}

func TestPersistence(t *testing.T) {
	rules := sweepRule + `      - name: NewClient
        description: d
        severity: info
        match: 'has(event.client_addr)'
        condition:
          first_seen: {key: [role, client_addr], learn_for: 1h}
`
	path := filepath.Join(t.TempDir(), "rules.json")
	h := newHarness(t, rules, Options{StatePath: path})
	known := page("app", 1)
	known.ClientAddr = "10.0.0.1"
	h.eval(0, known)
	h.eval(2*time.Hour, page("a", 20000))
	h.tickTo(2*time.Hour+time.Second, 2*time.Hour+time.Second) // saves after the transition
	checkTransitions(t, h.got, "firing Sweep @2h0m0s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 20000")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("state file: %v", err)
	}

	// Restart.
	h2 := newHarness(t, rules, Options{StatePath: path})
	h2.eval(2*time.Hour+2*time.Second, page("a", 20000)) // the same read replayed
	h2.eval(2*time.Hour+3*time.Second, known)            // seen before the restart: not new
	h2.tickTo(2*time.Hour+4*time.Second, 2*time.Hour+5*time.Minute)
	checkTransitions(t, h2.got)
	// The window survived too: the alert resolves when the first read leaves it.
	h2.tickTo(2*time.Hour+5*time.Minute+time.Second, 2*time.Hour+11*time.Minute)
	if len(h2.got) != 1 || h2.got[0].State != model.StateResolved || h2.got[0].Fingerprint != h.got[0].Fingerprint {
		t.Errorf("got %q, want the alert fired before the restart resolved", summaries(h2.got))
	}

	t.Run("a changed rule resolves its alerts at the first tick", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "rules.json")
		h := newHarness(t, sweepRule, Options{StatePath: path})
		h.eval(0, page("a", 20000))
		if err := h.e.Close(t0); err != nil {
			t.Fatal(err)
		}
		h2 := newHarness(t, strings.Replace(sweepRule, "10000", "20000", 1), Options{StatePath: path})
		h2.tickTo(time.Second, time.Second)
		checkTransitions(t, h2.got, "resolved Sweep @1s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 20000")
	})
}

func TestCorruptState(t *testing.T) {
	for name, content := range map[string]string{
		"not json":        "{\"version\": 1, \"rules\": [",
		"unknown version": `{"version": 99, "rules": []}`,
		"bad key":         `{"version": 1, "rules": [{"name": "Sweep", "definition": "` + definitionOf(t, sweepRule) + `", "groups": [{"key": ["only one"]}]}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "rules.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zap.WarnLevel)
			e, err := New(parseRules(t, sweepRule), Options{StatePath: path, Logger: zap.New(core), Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatalf("New: %v; want a warning and a fresh start", err)
			}
			if n := logs.FilterMessage("rule state lost; starting with no baselines, first-seen keys or firing alerts").Len(); n != 1 {
				t.Errorf("warnings: got %d, want 1", n)
			}
			if _, err := os.Stat(path + ".corrupt"); err != nil {
				t.Errorf("the unreadable file was not kept aside: %v", err)
			}
			if got := e.Eval(t0, page("a", 20000)); len(got) != 1 {
				t.Errorf("fresh engine: got %q, want one firing", summaries(got))
			}
		})
	}
	t.Run("unreadable file is an error", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "rules.json")
		if err := os.Mkdir(path, 0o700); err != nil { // a directory cannot be read as a file
			t.Fatal(err)
		}
		if _, err := New(parseRules(t, sweepRule), Options{StatePath: path}); err == nil {
			t.Error("got no error")
		}
	})
}

func definitionOf(t *testing.T, rules string) string {
	return definition(parseRules(t, rules)[0].Rules[0])
}

func TestEvaluationErrors(t *testing.T) {
	h := newHarness(t, `      - name: R
        description: d
        severity: info
        match: 'event.sensitive_read[2] == "x"'
`, Options{})
	h.eval(0, page("a", 1))
	h.eval(time.Second, page("a", 1))
	h.e.Tick(t0.Add(2 * time.Second))
	if got := testutil.ToFloat64(h.e.m.evalErrors.WithLabelValues("R")); got != 2 {
		t.Errorf("evaluation errors: got %g, want 2", got)
	}
	if got := testutil.ToFloat64(h.e.m.evaluations.WithLabelValues("R")); got != 2 {
		t.Errorf("evaluations: got %g, want 2", got)
	}
}

func TestSourceDispatch(t *testing.T) {
	h := newHarness(t, sweepRule+`      - name: Any
        description: d
        severity: info
        match: 'event.rows > 0'
`, Options{})
	h.eval(0, model.Event{Source: "wal", Rows: 1})
	h.eval(0, page("a", 1))
	h.e.Tick(t0)
	for rule, want := range map[string]float64{"Sweep": 1, "Any": 2} {
		if got := testutil.ToFloat64(h.e.m.evaluations.WithLabelValues(rule)); got != want {
			t.Errorf("%s evaluations: got %g, want %g", rule, got, want)
		}
	}
}

// A state file damaged beyond its previous generation starts the engine fresh and says
// so (Lost); a damaged file whose previous generation is good restores that one.
func TestStateGenerations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.json")
	h := newHarness(t, sweepRule, Options{StatePath: path})
	h.eval(0, page("a", 20000))
	if err := h.e.Save(t0); err != nil {
		t.Fatal(err)
	}
	h.eval(time.Second, page("b", 20000))
	if err := h.e.Save(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// Torn current file: the previous generation (a firing, b not yet) is restored.
	if err := os.WriteFile(path, []byte("{\"version\""), 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := New(parseRules(t, sweepRule), Options{StatePath: path, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if e.Lost() != nil {
		t.Errorf("Lost: %v, want nil: the previous generation was good", e.Lost())
	}
	if got := e.Firing(); len(got) != 1 || got[0].Labels["role"] != "a" {
		t.Errorf("firing after restoring the previous generation: got %v, want a's alert only", got)
	}
	// Both generations damaged: a fresh engine that says why.
	for _, p := range []string{path, path + atomicfile.PrevSuffix} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e, err = New(parseRules(t, sweepRule), Options{StatePath: path, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(e.Lost(), atomicfile.ErrNoGoodGeneration) {
		t.Errorf("Lost: %v, want ErrNoGoodGeneration", e.Lost())
	}
	if got := e.Firing(); len(got) != 0 {
		t.Errorf("firing after losing the state: %v, want none", got)
	}
}

// A failed save is told to OnSave until one succeeds; Forget drops a firing alert
// without a transition.
func TestSaveOutcomeAndForget(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	var outcomes []error
	h := newHarness(t, sweepRule, Options{StatePath: filepath.Join(dir, "rules.json"),
		OnSave: func(err error) { outcomes = append(outcomes, err) }})
	if err := os.WriteFile(dir, nil, 0o600); err != nil { // a file where the directory should be
		t.Fatal(err)
	}
	h.eval(0, page("a", 20000))
	if err := h.e.Save(t0); err == nil {
		t.Fatal("save under a file: got no error")
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := h.e.Save(t0); err != nil {
		t.Fatal(err)
	}
	if len(outcomes) != 2 || outcomes[0] == nil || outcomes[1] != nil {
		t.Errorf("OnSave outcomes: %v, want a failure then nil", outcomes)
	}
	firing := h.e.Firing()
	if len(firing) != 1 {
		t.Fatalf("firing: %v, want one", firing)
	}
	if n := h.e.Forget(map[string]bool{firing[0].Fingerprint: true}); n != 1 {
		t.Errorf("Forget: %d, want 1", n)
	}
	if got := h.e.Firing(); len(got) != 0 {
		t.Errorf("firing after Forget: %v", got)
	}
	h.got = nil
	h.tickTo(time.Hour, time.Minute)
	if len(h.got) != 0 {
		t.Errorf("a forgotten alert made transitions: %q", summaries(h.got))
	}
}

// An adopted alert (firing in the alert log, not in the restored state) goes on without
// a second firing line when its rule fires it again, and is resolved once when none does.
func TestAdoptedAlerts(t *testing.T) {
	h := newHarness(t, sweepRule, Options{ResolveAfter: time.Minute})
	first := h.eval(0, page("a", 20000))
	if len(first) != 1 {
		t.Fatalf("first firing: %q", summaries(first))
	}
	other := first[0]
	other.Fingerprint, other.Labels = "0000000000000000", map[string]string{"role": "gone"}

	h2 := newHarness(t, sweepRule, Options{ResolveAfter: time.Minute})
	h2.e.Adopt([]model.Alert{first[0], other}, t0)
	if got := h2.e.Firing(); len(got) != 2 {
		t.Errorf("Firing after Adopt: %d alerts, want the 2 adopted", len(got))
	}
	if got := h2.eval(time.Second, page("a", 20000)); len(got) != 0 {
		t.Errorf("the adopted alert fired again: %q, want no second firing line", summaries(got))
	}
	h2.got = nil
	h2.tickTo(time.Minute, 2*time.Hour)
	var resolved []model.Alert
	for _, a := range h2.got {
		if a.State == model.StateResolved {
			resolved = append(resolved, a)
		}
	}
	if len(resolved) != 2 || len(h2.got) != 2 {
		t.Fatalf("transitions: %q, want one resolution of each adopted alert", summaries(h2.got))
	}
}

// Firing lists every firing alert the engine holds, the overflow group's included: a
// restart restores them all to the gauges and to Alertmanager's re-send list.
func TestFiringListsTheOverflowGroup(t *testing.T) {
	h := newHarness(t, sweepRule, Options{MaxGroups: 1})
	h.eval(0, page("a", 20000))
	h.eval(time.Second, page("b", 20000)) // past MaxGroups: into the overflow group
	var rules []string
	for _, a := range h.e.Firing() {
		rules = append(rules, a.Rule)
	}
	slices.Sort(rules)
	want := []string{OverflowRuleName, "Sweep", "Sweep"}
	if !slices.Equal(rules, want) {
		t.Errorf("Firing: %v (transitions %q), want %v", rules, summaries(h.got), want)
	}
}

// TestAgain: an event counted by a rule with a response whose alert already fired is
// handed to Again with the firing alert — a second reading session in the same episode
// — but not the event that made it fire, nor events of rules without a response or in
// shadow mode.
func TestAgain(t *testing.T) {
	const rules = `
      - name: Respond
        description: d
        severity: critical
        precise: true
        response: {terminate: true}
        match: event.source == "canary"
        aggregate: {function: count, window: 10m, by: [role]}
        condition: {threshold: {op: ">=", value: 1}}
      - name: ShadowRespond
        description: d
        severity: critical
        mode: shadow
        precise: true
        response: {terminate: true}
        match: event.source == "canary"
        aggregate: {function: count, window: 10m, by: [role]}
        condition: {threshold: {op: ">=", value: 1}}
      - name: NoResponse
        description: d
        severity: critical
        match: event.source == "canary"
        aggregate: {function: count, window: 10m, by: [role]}
        condition: {threshold: {op: ">=", value: 1}}
`
	type again struct {
		rule, fingerprint string
		pid               int32
	}
	var got []again
	h := newHarness(t, rules, Options{Again: func(a model.Alert, ev *model.Event) {
		got = append(got, again{a.Rule, a.Fingerprint, ev.PID})
	}})
	read := func(role string, pid int32) model.Event {
		return model.Event{Source: "canary", Role: role, PID: pid, Rows: 1, Calls: 1, Complete: true}
	}
	fired := h.eval(0, read("mallory", 1))
	checkTransitions(t, fired, "firing Respond @0s {role=mallory,source=canary} 1", "firing NoResponse @0s {role=mallory,source=canary} 1")
	if len(got) != 0 {
		t.Fatalf("the event that fired: got Again %+v, want none", got)
	}
	h.eval(time.Second, read("mallory", 2))
	h.eval(2*time.Second, read("eve", 3)) // a group of its own: fires
	h.eval(3*time.Second, read("mallory", 4))
	want := []again{{"Respond", fired[0].Fingerprint, 2}, {"Respond", fired[0].Fingerprint, 4}}
	if !slices.Equal(got, want) {
		t.Errorf("got Again %+v, want %+v", got, want)
	}
}

// Every alert names the server its events were observed on, whether the rule lists
// the server fields or not, and reads on two servers are two alerts.
func TestAlertsNameTheirServer(t *testing.T) {
	h := newHarness(t, `      - name: Bulk
        description: d
        severity: critical
        match: event.rows > 0
        aggregate: {function: sum, field: rows, window: 1m, by: [database, role]}
        condition: {threshold: {op: ">=", value: 100}}`, Options{})
	primary := model.Event{Source: "statements", Cluster: "eu", Instance: "db1:5432", Database: "app", Role: "analyst", Rows: 60, Calls: 1}
	standby := primary
	standby.Instance = "db1r:5432"
	early := append(h.eval(0, primary), h.eval(time.Second, standby)...)
	if got := append(early, h.tickTo(2*time.Second, 2*time.Second)...); len(got) != 0 {
		t.Fatalf("60 rows on each of two servers: got %v, want no alert (each server's window has 60)", got)
	}
	got := h.eval(3*time.Second, standby)
	got = append(got, h.tickTo(4*time.Second, 4*time.Second)...)
	if len(got) != 1 {
		t.Fatalf("got %d transitions, want one alert for the standby: %v", len(got), got)
	}
	want := map[string]string{"cluster": "eu", "instance": "db1r:5432", "database": "app", "role": "analyst"}
	for k, v := range want {
		if got[0].Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, got[0].Labels[k], v, got[0].Labels)
		}
	}
}

// A state file written before groups had the server fields restores: its groups are
// those of the one server the detector watched, with the fields empty.
func TestStateWithoutServerFieldsRestores(t *testing.T) {
	got, err := decodeKey(mustGroupFields(t, withServer([]string{"database", "role"})), []string{"app", "analyst"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].s != "app" || got[1].s != "analyst" || got[2].s != "" || got[3].s != "" {
		t.Errorf("got %+v, want app, analyst and two empty server fields", got)
	}
	if _, err := decodeKey(mustGroupFields(t, withServer([]string{"database", "role", "relation"})), []string{"app", "analyst"}, nil); err == nil {
		t.Error("a key missing a field that is not a server field decoded; want an error")
	}
}

func mustGroupFields(t *testing.T, names []string) []model.EventField {
	t.Helper()
	fs, err := groupFields(names)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// A detector upgraded from the time groups had no server fields goes on where it was:
// the window of its one server's reads still counts them (Options.LegacyServer), so a
// sweep split across the upgrade pages, and a firing alert keeps its labels until it
// resolves.
func TestStateFromBeforeServerFieldsGoesOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.json")
	h := newHarness(t, sweepRule, Options{StatePath: path})
	h.eval(0, page("a", 6000)) // half a sweep, from a detector without server fields
	h.eval(time.Second, page("b", 20000))
	h.tickTo(2*time.Second, 2*time.Second)
	if err := h.e.Close(t0.Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Make it an old state file: keys without the trailing server fields.
	data, _, _, err := atomicfile.ReadChecked(path)
	if err != nil {
		t.Fatal(err)
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil {
		t.Fatal(err)
	}
	for i := range sf.Rules {
		for j := range sf.Rules[i].Groups {
			k := sf.Rules[i].Groups[j].Key
			sf.Rules[i].Groups[j].Key = k[:len(k)-len(model.ServerFields)]
		}
	}
	if data, err = json.Marshal(sf); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.WriteChecked(path, data); err != nil {
		t.Fatal(err)
	}

	h2 := newHarness(t, sweepRule, Options{StatePath: path, LegacyServer: map[string]string{"instance": "db1:5432"}})
	if err := h2.e.Lost(); err != nil {
		t.Fatalf("the old state was lost: %v", err)
	}
	rest := page("a", 6000)
	rest.Instance = "db1:5432"
	got := h2.eval(4*time.Second, rest)
	if len(got) != 1 || got[0].State != model.StateFiring || got[0].Value != 12000 || got[0].Labels["instance"] != "db1:5432" {
		t.Fatalf("got %q, want the sweep of a (6,000 rows before the upgrade, 6,000 after) firing on db1:5432", summaries(got))
	}
	// b's alert fired before the upgrade: it resolves under its old labels.
	h2.tickTo(5*time.Second, 11*time.Minute)
	var resolved []model.Alert
	for _, a := range h2.got {
		if a.State == model.StateResolved && a.Labels["role"] == "b" {
			resolved = append(resolved, a)
		}
	}
	if len(resolved) != 1 || resolved[0].Fingerprint != h.got[0].Fingerprint {
		t.Errorf("got %q, want b's alert of before the upgrade resolved with its fingerprint %s", summaries(h2.got), h.got[0].Fingerprint)
	}
}
