package detector

import (
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/detector/response"
	"github.com/pgtripwire/pgtripwire/model"
)

// The automatic response terminates only a session it is sure read the sensitive
// columns, and only the session that did: every other case is a refusal, recorded.
func TestAutomaticResponsePlansOnlyASureRead(t *testing.T) {
	read := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	reader := evidence.Session{PID: 42, BackendStart: read.Add(-time.Minute), Role: "mallory"}
	trigger := func(edit func(*model.Event)) *model.Event {
		ev := &model.Event{Time: read, Source: "canary", Kind: "canary_read", Role: "mallory", PID: 42,
			Relation: "public.users", SensitiveRead: []string{"email"}, Complete: true}
		if edit != nil {
			edit(ev)
		}
		return ev
	}
	r := &autoResponder{mode: config.ResponseOn, guard: response.Guard{Force: true}, instance: "db1:5432"}
	for _, tc := range []struct {
		name     string
		trigger  *model.Event
		sessions []evidence.Session
		steps    int
		refusal  string
		labels   map[string]string
	}{
		{"on a standby", trigger(nil), []evidence.Session{reader}, 0, "the read ran on replica-1", map[string]string{model.LabelInstance: "replica-1"}},
		{"in another cluster", trigger(nil), []evidence.Session{reader}, 0, "the read ran on us/db1:5432",
			map[string]string{model.LabelInstance: "db1:5432", model.LabelCluster: "us"}},
		{"on the responder's server", trigger(nil), []evidence.Session{reader}, 1, "", map[string]string{model.LabelInstance: "db1:5432"}},
		{"a sure read", trigger(nil), []evidence.Session{reader, {PID: 43, BackendStart: reader.BackendStart, Role: "mallory"}}, 1, "", nil},
		{"fired on the clock", nil, []evidence.Session{reader}, 0, "names no session", nil},
		{"not classified", trigger(func(ev *model.Event) { ev.Complete = false }), []evidence.Session{reader}, 0, "could not be classified", nil},
		{"no sensitive column", trigger(func(ev *model.Event) { ev.SensitiveRead = nil }), []evidence.Session{reader}, 0, "could not be classified", nil},
		{"the session is gone", trigger(nil), nil, 0, "the session is gone", nil},
		{"the pid is a later session's", trigger(nil), []evidence.Session{{PID: 42, BackendStart: read.Add(time.Minute), Role: "mallory"}}, 0, "the session is gone", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			labels := map[string]string{model.LabelRole: "mallory"}
			for k, v := range tc.labels {
				labels[k] = v
			}
			e := &evidence.Evidence{Fingerprint: "0123456789abcdef", Rule: "CanaryRowRead", Labels: labels, Sessions: tc.sessions}
			p, err := r.plan(e, evidence.Input{Trigger: tc.trigger})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Steps) != tc.steps {
				t.Errorf("got %d steps %+v, want %d", len(p.Steps), p.Steps, tc.steps)
			}
			if tc.steps == 1 && !strings.Contains(p.Steps[0].SQL, "pid = 42 ") {
				t.Errorf("got %q, want the reader's pid only", p.Steps[0].SQL)
			}
			if tc.refusal != "" && (len(p.Refused) != 1 || !strings.Contains(p.Refused[0].Reason, tc.refusal)) {
				t.Errorf("got refusals %+v, want one saying %q", p.Refused, tc.refusal)
			}
		})
	}
}
