package canary_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/model"
)

// oldMessage is what the function planted by the previous version emits: no statement.
const oldMessage = `{"v" : 1, "relation" : "public.users", "key" : "100017", "role" : "mallory", "client_addr" : "10.1.2.3", "application" : "psql", "pid" : 4242, "database" : "app", "query_id" : -5}`

// visitMessage is oldMessage as the current function emits it, for statement.
func visitMessage(statement string, truncated bool, triggerDepth int) string {
	q := strings.ReplaceAll(strings.ReplaceAll(statement, `\`, `\\`), `"`, `\"`)
	t := "false"
	if truncated {
		t = "true"
	}
	return strings.TrimSuffix(oldMessage, "}") + `, "statement" : "` + q + `", "statement_truncated" : ` + t +
		`, "trigger_depth" : ` + string(rune('0'+triggerDepth)) + `}`
}

func TestDecode(t *testing.T) {
	want := model.Event{Source: canary.Source, Kind: canary.KindRead, Object: "public.users#100017",
		Relation: "public.users", Database: "app", Role: "mallory", ClientAddr: "10.1.2.3", Application: "psql",
		PID: 4242, QueryID: -5, Rows: 1, Calls: 1}
	sameEvent := func(t *testing.T, ev model.Event) {
		t.Helper()
		if ev.Source != want.Source || ev.Kind != want.Kind || ev.Object != want.Object || ev.Relation != want.Relation ||
			ev.Database != want.Database || ev.Role != want.Role || ev.ClientAddr != want.ClientAddr ||
			ev.Application != want.Application || ev.PID != want.PID || ev.QueryID != want.QueryID || ev.Complete {
			t.Errorf("got %+v\nwant %+v (not classified yet: Complete false)", ev, want)
		}
	}

	t.Run("previous version", func(t *testing.T) {
		v, ok, err := canary.Decode(canary.MessagePrefix, []byte(oldMessage))
		if err != nil || !ok {
			t.Fatalf("got ok %v, err %v; want a canary visit", ok, err)
		}
		sameEvent(t, v.Event)
		if v.HasStatement || v.Statement != "" {
			t.Errorf("got statement %q (HasStatement %v), want none", v.Statement, v.HasStatement)
		}
	})
	t.Run("with the statement", func(t *testing.T) {
		const stmt = `SELECT count(*) FROM users WHERE note = 'say "hi"\n'`
		v, ok, err := canary.Decode(canary.MessagePrefix, []byte(visitMessage(stmt, true, 2)))
		if err != nil || !ok {
			t.Fatalf("got ok %v, err %v; want a canary visit", ok, err)
		}
		sameEvent(t, v.Event)
		if !v.HasStatement || v.Statement != stmt || !v.Truncated || v.TriggerDepth != 2 {
			t.Errorf("got %+v, want the statement, truncated, at trigger depth 2", v)
		}
		if v.Event.Statement != "" {
			t.Errorf("the undecided event carries the statement %q", v.Event.Statement)
		}
	})

	if _, ok, err := canary.Decode("pgtripwire.ddl", []byte(oldMessage)); ok || err != nil {
		t.Errorf("another prefix: got ok %v, err %v; want ok false, no error", ok, err)
	}

	for _, tc := range []struct{ name, content, want string }{
		{"not json", `mallory`, "not a JSON object"},
		{"no version", `{"relation":"r","key":"1","role":"x","pid":1}`, "no version"},
		{"future version", `{"v":2,"relation":"r","key":"1","role":"x","pid":1}`, "version 2"},
		{"no role", `{"v":1,"relation":"r","key":"1","pid":1}`, "no role"},
		{"no pid", `{"v":1,"relation":"r","key":"1","role":"x"}`, "no pid"},
		{"pid out of range", `{"v":1,"relation":"r","key":"1","role":"x","pid":9999999999}`, "out of range"},
		{"bad address", `{"v":1,"relation":"r","key":"1","role":"x","pid":1,"client_addr":"nowhere"}`, "not an IP address"},
		{"trailing data", oldMessage + `{}`, "trailing data"},
		{"wrong type", `{"v":1,"relation":["r"],"key":"1","role":"x","pid":1}`, "not a JSON object"},
		{"statement not a string", `{"v":1,"relation":"r","key":"1","role":"x","pid":1,"statement":7}`, "not a JSON object"},
		{"too big", `{"v":1,"x":"` + strings.Repeat("a", 140000) + `"}`, "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ok, err := canary.Decode(canary.MessagePrefix, []byte(tc.content))
			if !ok || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got ok %v, err %v; want ok and an error containing %q", ok, err, tc.want)
			}
		})
	}

	t.Run("errors never quote the statement", func(t *testing.T) {
		const secret = "hunter2-literal"
		_, _, err := canary.Decode(canary.MessagePrefix,
			[]byte(`{"v":1,"relation":"r","key":"1","role":"x","pid":1,"statement":"SELECT '`+secret+`'","trigger_depth":"x"}`))
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("got %v, want an error that does not quote the statement", err)
		}
	})
}

// TestClassifierDecodeUnclassified: the messages the detector cannot judge are canary
// reads with Complete false — unreadable ones, those of the previous version's
// function, cut or trigger-made statements, transactional (forged) ones — and each is
// known at once, without a catalog (the classifier here has no connection).
func TestClassifierDecodeUnclassified(t *testing.T) {
	c := canary.NewClassifier(canary.ClassifierConfig{})
	for _, tc := range []struct {
		name          string
		content       string
		transactional bool
		wantStatement string // redacted
	}{
		{name: "garbage", content: "garbage"},
		{name: "previous version", content: oldMessage},
		{name: "cut statement", content: visitMessage(`SELECT count(*) FROM users WHERE email = 'a@b`, true, 0),
			wantStatement: "<statement not shown"},
		{name: "made by a trigger", content: visitMessage(`INSERT INTO audit VALUES ('x')`, false, 1),
			wantStatement: "INSERT INTO audit VALUES ($1)"},
		{name: "transactional", content: visitMessage(`SELECT count(*) FROM users`, false, 0), transactional: true,
			wantStatement: "SELECT count(*) FROM users"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, finish, ok := c.Decode(canary.MessagePrefix, []byte(tc.content), tc.transactional)
			if !ok {
				t.Fatal("a canary message was not taken")
			}
			if finish != nil {
				ev = finish(t.Context(), ev)
			}
			if ev.Source != canary.Source || ev.Kind != canary.KindRead || ev.Complete || ev.MessagePrefix != canary.MessagePrefix {
				t.Errorf("got %+v, want an unclassified canary_read", ev)
			}
			if !strings.HasPrefix(ev.Statement, tc.wantStatement) || (tc.wantStatement == "") != (ev.Statement == "") {
				t.Errorf("statement: got %q, want %q", ev.Statement, tc.wantStatement)
			}
		})
	}
	if _, _, ok := c.Decode("pgtripwire.ddl", []byte(oldMessage), false); ok {
		t.Error("another prefix was taken as a canary message")
	}
}

// TestClassifierWithoutCatalogFailsClosed: a visit that could be classified waits for a
// catalog check; with none coming (nothing runs the classifier here) it is reported
// unclassified after the wait, the next visits without waiting again, or as soon as its
// context ends — never dropped, never cleared.
func TestClassifierWithoutCatalogFailsClosed(t *testing.T) {
	const wait = 500 * time.Millisecond
	c := canary.NewClassifier(canary.ClassifierConfig{Wait: wait})
	content := []byte(visitMessage(`SELECT count(*) FROM users WHERE email <> 'x@y.z'`, false, 0))
	for i, want := range []time.Duration{wait, 0} {
		ev, finish, ok := c.Decode(canary.MessagePrefix, content, false)
		if !ok || finish == nil {
			t.Fatalf("got ok %v, finish %v; want a visit to classify", ok, finish != nil)
		}
		start := time.Now()
		got := finish(t.Context(), ev)
		if got.Complete || got.Statement != "SELECT count(*) FROM users WHERE email <> $1" {
			t.Errorf("visit %d: got %+v, want unclassified with the redacted statement", i, got)
		}
		if took := time.Since(start); took < want || took > want+wait/2 {
			t.Errorf("visit %d: answered after %v, want %v", i, took, want)
		}
	}

	c = canary.NewClassifier(canary.ClassifierConfig{Wait: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ev, finish, _ := c.Decode(canary.MessagePrefix, content, false)
	if got := finish(ctx, ev); got.Complete || got.Kind != canary.KindRead {
		t.Errorf("cancelled: got %+v, want an unclassified canary_read", got)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(oldMessage))
	f.Add([]byte(visitMessage("SELECT email FROM users", false, 0)))
	f.Add([]byte(`{"v":1,"relation":"r","key":"1","role":"x","pid":1,"client_addr":null,"statement":null}`))
	f.Add([]byte(`{"v":1e400}`))
	f.Add([]byte(`[`))
	c := canary.NewClassifier(canary.ClassifierConfig{Wait: 1})
	f.Fuzz(func(t *testing.T, content []byte) {
		v, ok, err := canary.Decode(canary.MessagePrefix, content)
		if !ok {
			t.Fatal("a canary-prefixed message was not taken")
		}
		if err == nil && (v.Event.Role == "" || v.Event.PID <= 0 || v.Event.Object == "") {
			t.Fatalf("accepted an event without role, pid or canary: %+v", v.Event)
		}
		ev, finish, ok := c.Decode(canary.MessagePrefix, content, false)
		if finish != nil {
			ev = finish(t.Context(), ev)
		}
		if !ok || ev.Kind != canary.KindRead || ev.Complete {
			t.Fatalf("without a catalog: got %+v, %v; want an unclassified canary_read", ev, ok)
		}
	})
}
