package engine

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
)

// stmt is a statement event of an application role, as the statements source
// reports one: its query id is its fingerprint.
func stmt(role string, queryID int64, shapes ...string) model.Event {
	return model.Event{
		Source: "statements", Database: "app", Role: role, ApplicationRole: true, Relation: "public.users",
		SensitiveReferenced: []string{"email"}, Complete: true, Rows: 1, Calls: 1, QueryID: queryID, Shapes: shapes,
	}
}

// newStatementsRule is a statement profile per role: the query ids each role
// runs in its own first 2 minutes are learned, and the new ones after that
// are counted per role over 10 minutes.
const newStatementsRule = `      - name: NewStatements
        description: d
        severity: warning
        match: 'event.application_role'
        aggregate: {function: count_distinct, field: query_id, window: 10m, by: [database, role]}
        condition:
          first_seen: {key: [database, role, query_id], learn_for: 2m, learn_per: [database, role], forget_after: 1h}
          threshold: {op: ">=", value: 1}
        annotations:
          summary: '{{ .Value }} new statements by {{ .Labels.role }}'
`

// A first_seen condition with an aggregate counts the new keys of a group:
// one alert for the role, whose value is how many new statements it ran, not
// one alert per statement. Each role learns its own first minutes.
func TestFirstSeenWithAggregate(t *testing.T) {
	h := newHarness(t, newStatementsRule, Options{})
	h.eval(0, stmt("webapp", 1))
	h.eval(0, stmt("webapp", 2))
	h.eval(time.Minute, stmt("webapp", 3)) // still learning
	h.tickTo(time.Second, 3*time.Minute)
	for _, q := range []int64{1, 2, 3} {
		h.eval(3*time.Minute, stmt("webapp", q)) // known
	}
	checkTransitions(t, h.got)

	h.eval(3*time.Minute, stmt("webapp", 4))
	for _, q := range []int64{5, 6, 4, 5} { // two more new ones, and the same again
		h.eval(3*time.Minute+time.Second, stmt("webapp", q))
	}
	// A role first seen long after the rule started learns its own first 2 minutes.
	h.eval(5*time.Minute, stmt("worker", 1))
	h.eval(6*time.Minute, stmt("worker", 9))
	h.eval(7*time.Minute+time.Second, stmt("worker", 10))
	h.eval(7*time.Minute+2*time.Second, stmt("worker", 9))
	h.tickTo(3*time.Minute+time.Second, 14*time.Minute)
	checkTransitions(t, h.got,
		"firing NewStatements @3m0s {database=app,role=webapp} 1",
		"firing NewStatements @7m1s {database=app,role=worker} 1",
		// The window of 10 minutes slides past the new statements: resolved with
		// the most it counted while firing.
		"resolved NewStatements @13m0s {database=app,role=webapp} 3")
	if got := h.got[0].Annotations["summary"]; got != "1 new statements by webapp" {
		t.Errorf("summary: got %q", got)
	}

	// A role silent for longer than forget_after is new again: its keys are
	// forgotten, and it learns its first minutes again rather than paging on
	// every statement it had before.
	h.got = nil
	h.tickTo(2*time.Hour, 2*time.Hour)
	h.eval(2*time.Hour+time.Second, stmt("webapp", 1))
	h.eval(2*time.Hour+time.Minute, stmt("webapp", 7))
	h.eval(2*time.Hour+3*time.Minute, stmt("webapp", 8))
	checkTransitions(t, h.got,
		"resolved NewStatements @2h0m0s {database=app,role=worker} 1",
		"firing NewStatements @2h3m0s {database=app,role=webapp} 1")
}

// remember: learning keeps only what was learned: a statement first run after
// the learning period stays new every time it runs, so the alert fires as long
// as it runs, and again when it comes back; remember: always learns it the
// first time.
func TestFirstSeenRememberLearning(t *testing.T) {
	rule := `      - name: Injection
        description: d
        severity: critical
        match: '"injection_union" in event.shapes'
        aggregate: {function: count_distinct, field: query_id, window: 1m, by: [database, role]}
        condition:
          first_seen: {key: [database, role, query_id], learn_for: 2m, remember: learning}
          threshold: {op: ">=", value: 1}
`
	for _, tc := range []struct {
		remember string
		want     []string
	}{
		{"learning", []string{
			"firing Injection @3m0s {database=app,role=webapp} 1",
			"resolved Injection @7m0s {database=app,role=webapp} 1",
			"firing Injection @1h0m0s {database=app,role=webapp} 1",
		}},
		{"always", []string{
			"firing Injection @3m0s {database=app,role=webapp} 1",
			"resolved Injection @4m0s {database=app,role=webapp} 1",
		}},
	} {
		t.Run(tc.remember, func(t *testing.T) {
			h := newHarness(t, strings.Replace(rule, "remember: learning", "remember: "+tc.remember, 1), Options{})
			h.eval(0, stmt("webapp", 7, "injection_union")) // the application's own (a classifier's mistake): learned
			for at := 3 * time.Minute; at <= 6*time.Minute; at += 10 * time.Second {
				h.eval(at, stmt("webapp", 7, "injection_union"))
				h.eval(at, stmt("webapp", 8, "injection_union")) // an extraction, one row a statement
				h.tickTo(at, at)
			}
			h.tickTo(6*time.Minute+time.Second, 10*time.Minute)
			h.eval(time.Hour, stmt("webapp", 8, "injection_union")) // the same extraction an hour later
			h.tickTo(time.Hour, time.Hour)
			checkTransitions(t, h.got, tc.want...)
		})
	}

	t.Run("an explicit remember: always is the rule left as it was", func(t *testing.T) {
		plain := `      - name: New
        description: d
        severity: info
        match: 'true'
        condition:
          first_seen: {key: [role], learn_for: 1h}
`
		explicit := strings.Replace(plain, "learn_for: 1h}", "learn_for: 1h, remember: always}", 1)
		if a, b := definitionOf(t, plain), definitionOf(t, explicit); a != b {
			t.Errorf("definitions differ (%s, %s): the state of the rule would be dropped", a, b)
		}
	})
}

// The learning start of each role is part of the saved state: a role that
// began learning just before a restart does not learn again after it, and
// what it learned is still known.
func TestFirstSeenLearnPerPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.json")
	h := newHarness(t, newStatementsRule, Options{StatePath: path})
	h.tickTo(0, 0)
	h.eval(10*time.Minute, stmt("webapp", 1)) // webapp learns from 10m to 12m
	if err := h.e.Close(t0.Add(11 * time.Minute)); err != nil {
		t.Fatal(err)
	}

	h2 := newHarness(t, newStatementsRule, Options{StatePath: path})
	h2.eval(11*time.Minute+30*time.Second, stmt("webapp", 2)) // still learning
	h2.eval(12*time.Minute+30*time.Second, stmt("webapp", 1)) // learned before the restart
	h2.eval(12*time.Minute+30*time.Second, stmt("webapp", 2)) // learned after it
	h2.eval(12*time.Minute+31*time.Second, stmt("webapp", 3)) // new
	checkTransitions(t, h2.got, "firing NewStatements @12m31s {database=app,role=webapp} 1")
}

// A rule keeps at most MaxGroups learn_per values: beyond, the one seen
// longest ago is forgotten (it learns again if it comes back), and the
// overflow is reported.
func TestFirstSeenLearnPerOverflow(t *testing.T) {
	h := newHarness(t, newStatementsRule, Options{MaxGroups: 4, ResolveAfter: time.Minute})
	h.eval(0, stmt("a", 1))
	h.eval(time.Second, stmt("b", 1))
	h.eval(2*time.Second, stmt("c", 1)) // 3 roles, 3 keys
	checkTransitions(t, h.got)
	h.eval(3*time.Second, stmt("c", 2)) // a fourth key: within bounds
	h.eval(4*time.Second, stmt("d", 1)) // a fifth key and a fourth role
	checkTransitions(t, h.got, "firing RuleGroupOverflow @4s {rule=NewStatements} 4")
	if got := h.e.rules[0].scopes.n; got != 4 {
		t.Errorf("learn_per values kept: got %d, want 4", got)
	}
	h.eval(5*time.Second, stmt("e", 1)) // a fifth role: a, seen longest ago, is forgotten
	if got, wantGone := h.e.rules[0].scopes.n, stmt("a", 1); got != 4 || h.e.rules[0].scopes.find(hashEvent(&h.e.h, h.e.rules[0].scopeBy, &wantGone), h.e.rules[0].scopeBy, &wantGone) != nil {
		t.Errorf("learn_per values: got %d, want 4 without a", got)
	}
}
