package response

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/model"
)

func testEvidence() *evidence.Evidence {
	start := time.Date(2026, 12, 1, 6, 0, 0, 123456000, time.UTC)
	return &evidence.Evidence{
		Fingerprint: "0123456789abcdef",
		Rule:        "SensitiveBulkRead",
		Labels:      map[string]string{model.LabelRole: "mallory", model.LabelDatabase: "app", model.LabelTable: "public.users"},
		Sessions: []evidence.Session{
			{PID: 4242, BackendStart: start, Role: "mallory", Database: "app", Trigger: true},
			{PID: 4343, BackendStart: start, Role: "bob", Database: "app"}, // same client address, another role
		},
		Privileges: &evidence.Privileges{Role: "mallory", Table: "public.users", CanLogin: true, Grants: []evidence.Grant{
			{Via: evidence.ViaDirect, Grantee: "mallory"},
			{Via: evidence.ViaDirect, Grantee: "mallory", Columns: []string{"email", "Pass word"}},
			{Via: evidence.ViaMembership, Grantee: "reporting"},
			{Via: evidence.ViaReadAll, Grantee: "pg_read_all_data"},
			{Via: evidence.ViaPublic, Grantee: "PUBLIC", Columns: []string{"id"}},
			{Via: evidence.ViaOwner, Grantee: "app_owner"},
		}},
	}
}

func TestPlanResponse(t *testing.T) {
	all := []Action{Revoke, Terminate, LockRole} // any order: the plan's is fixed
	tests := []struct {
		name        string
		edit        func(*evidence.Evidence)
		actions     []Action
		guard       Guard
		wantSQL     []string
		wantRefused []string // substrings, one per refusal, in order
	}{
		{
			name: "every action", actions: all, guard: Guard{DetectorRole: "pgtripwire"},
			wantSQL: []string{
				`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE pid = 4242 AND backend_start = '2026-12-01 06:00:00.123456+00'::timestamptz AND usename = 'mallory'`,
				`ALTER ROLE "mallory" NOLOGIN`,
				`REVOKE SELECT ON TABLE "public"."users" FROM "mallory"`,
				`REVOKE SELECT ("email", "Pass word") ON TABLE "public"."users" FROM "mallory"`,
				`REVOKE "reporting" FROM "mallory"`,
				`REVOKE "pg_read_all_data" FROM "mallory"`,
			},
			wantRefused: []string{"session of role bob", "granted to PUBLIC: revoking affects every role, do it by hand", "owns the table"},
		},
		{
			name: "an application role without force", actions: []Action{Terminate, LockRole}, guard: Guard{ApplicationRoles: []string{"mallory"}},
			wantRefused: []string{"application role (roles.application)", "application role (roles.application)"},
		},
		{
			name: "an application role with force", actions: []Action{LockRole}, guard: Guard{ApplicationRoles: []string{"mallory"}, Force: true},
			wantSQL: []string{`ALTER ROLE "mallory" NOLOGIN`},
		},
		{
			name: "the detector's role", actions: []Action{Terminate}, guard: Guard{DetectorRole: "mallory", Force: true},
			wantRefused: []string{"the detector's own role"},
		},
		{
			name:        "a superuser",
			edit:        func(e *evidence.Evidence) { e.Privileges.Superuser = true; e.Sessions = e.Sessions[:1] },
			actions:     all,
			wantSQL:     []string{`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE pid = 4242 AND backend_start = '2026-12-01 06:00:00.123456+00'::timestamptz AND usename = 'mallory'`},
			wantRefused: []string{"superuser: the responder cannot lock one", "superuser: every check passes"},
		},
		{
			name:        "no session, no privileges",
			edit:        func(e *evidence.Evidence) { e.Sessions, e.Privileges = nil, nil },
			actions:     all,
			wantSQL:     []string{`ALTER ROLE "mallory" NOLOGIN`},
			wantRefused: []string{"holds no session of mallory", "holds no privileges of mallory"},
		},
		{
			name: "names that need quoting",
			edit: func(e *evidence.Evidence) {
				e.Labels[model.LabelRole] = `o'hara\"x`
				e.Sessions = []evidence.Session{{PID: 7, BackendStart: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600)), Role: `o'hara\"x`}}
				e.Privileges = &evidence.Privileges{Role: `o'hara\"x`, Table: `"My Schema"."Users"`, Grants: []evidence.Grant{{Via: evidence.ViaDirect}}}
			},
			actions: all,
			wantSQL: []string{
				`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE pid = 7 AND backend_start = '2026-01-02 02:04:05+00'::timestamptz AND usename = E'o''hara\\"x'`,
				`ALTER ROLE "o'hara\""x" NOLOGIN`,
				`REVOKE SELECT ON TABLE "My Schema"."Users" FROM "o'hara\""x"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := testEvidence()
			if tt.edit != nil {
				tt.edit(ev)
			}
			p, err := NewPlan(ev, tt.actions, tt.guard)
			if err != nil {
				t.Fatal(err)
			}
			var gotSQL []string
			for _, s := range p.Steps {
				gotSQL = append(gotSQL, s.SQL)
			}
			if strings.Join(gotSQL, "\n") != strings.Join(tt.wantSQL, "\n") {
				t.Errorf("got SQL:\n%s\nwant:\n%s", strings.Join(gotSQL, "\n"), strings.Join(tt.wantSQL, "\n"))
			}
			if len(p.Refused) != len(tt.wantRefused) {
				t.Fatalf("got refusals %+v, want %d", p.Refused, len(tt.wantRefused))
			}
			for i, want := range tt.wantRefused {
				if !strings.Contains(p.Refused[i].Reason, want) {
					t.Errorf("refusal %d: got %q, want it to say %q", i, p.Refused[i].Reason, want)
				}
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	noRole := testEvidence()
	noRole.Labels, noRole.Sessions, noRole.Privileges = nil, nil, nil
	if _, err := NewPlan(noRole, []Action{Terminate}, Guard{}); !errors.Is(err, ErrNothingToAct) {
		t.Errorf("evidence without role or session: got %v, want ErrNothingToAct", err)
	}
	if _, err := NewPlan(testEvidence(), nil, Guard{}); err == nil {
		t.Error("no action: got no error")
	}
	if _, err := NewPlan(testEvidence(), []Action{"drop_role"}, Guard{}); err == nil {
		t.Error("an unknown action: got no error")
	}
}

// TestRecordEachResponseIsItsOwnAlert: two responses to one alert are two alerts, each
// a firing line and its resolved line at the same time.
func TestRecordEachResponseIsItsOwnAlert(t *testing.T) {
	p, err := NewPlan(testEvidence(), []Action{Terminate, LockRole}, Guard{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 6, 1, 0, 0, time.UTC)
	res := &Result{Steps: []StepResult{
		{Action: Terminate, Target: "session pid 4242", Outcome: Done, Detail: "terminated"},
		{Action: LockRole, Target: "role mallory", Outcome: Done, Detail: "locked (NOLOGIN)"},
		{Action: Terminate, Target: "session pid 4343", Outcome: Refused, Detail: "a session of role bob, not of mallory"},
	}}
	first := Record(p, res, Origin{By: ByRespond, Actor: "alice@ops1", Time: at})
	second := Record(p, res, Origin{By: ByRespond, Actor: "alice@ops1", Time: at})
	if len(first) != 2 || first[0].State != model.StateFiring || first[1].State != model.StateResolved ||
		!first[0].Time.Equal(first[1].Time) || first[0].Fingerprint != first[1].Fingerprint {
		t.Fatalf("got %+v, want a firing line and its resolved line at the same time", first)
	}
	if first[0].Fingerprint == second[0].Fingerprint {
		t.Errorf("two responses to one alert got one fingerprint %s", first[0].Fingerprint)
	}
	a := first[0]
	for k, want := range map[string]string{
		LabelResponseTo: "0123456789abcdef", model.LabelRole: "mallory", model.LabelDatabase: "app",
		LabelActions: "terminate,lock_role", LabelOutcome: OutcomePartial, LabelBy: ByRespond,
	} {
		if got := a.Labels[k]; got != want {
			t.Errorf("label %s: got %q, want %q", k, got, want)
		}
	}
	if a.Rule != Rule || a.Severity != model.SeverityWarning || a.Value != 2 {
		t.Errorf("got rule %s, severity %s, value %v; want ResponseTaken, warning, 2", a.Rule, a.Severity, a.Value)
	}
	wantSummary := "Response to 0123456789abcdef: terminated 1 session (pid 4242), locked role mallory, 1 refused"
	if got := a.Annotations[model.AnnotationSummary]; got != wantSummary {
		t.Errorf("summary: got %q, want %q", got, wantSummary)
	}
	if got := a.Annotations[AnnotationActor]; got != "alice@ops1" {
		t.Errorf("actor: got %q", got)
	}

	shadow := Record(p, nil, Origin{By: ByAutomatic, Time: at})[0]
	if shadow.Labels[LabelOutcome] != OutcomeShadow || shadow.Value != 0 ||
		!strings.HasPrefix(shadow.Annotations[model.AnnotationSummary], "Automatic response to 0123456789abcdef (shadow): would have terminated 1 session (pid 4242), locked role mallory") {
		t.Errorf("shadow: got %+v", shadow)
	}
}

// A role name is the client's choice: printed in a comment, its control characters
// are escaped, so that no name can end the comment and start a statement of its own
// in what an operator pastes into psql; the statements quote it.
func TestPlanPrintsNoNameAsALineOfItsOwn(t *testing.T) {
	const evil = "x\nDROP TABLE public.users; --"
	ev := testEvidence()
	ev.Labels[model.LabelRole] = evil
	ev.Labels[model.LabelDatabase] = "app\r\nDROP DATABASE app; --"
	ev.Sessions[0].Role = evil
	ev.Sessions[1].Role = "bob\nDROP ROLE bob; --"
	ev.Privileges.Role = evil
	p, err := NewPlan(ev, []Action{Terminate, LockRole}, Guard{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if _, err := p.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	// A quoted name may span lines inside a statement (it is one token there); after a
	// comment line, only a statement the plan wrote may start.
	lines := strings.Split(b.String(), "\n")
	for i := 1; i < len(lines); i++ {
		if strings.HasPrefix(lines[i-1], "--") && !strings.HasPrefix(lines[i], "--") &&
			!strings.HasPrefix(lines[i], "SELECT pg_terminate_backend") && !strings.HasPrefix(lines[i], "ALTER ROLE") && lines[i] != "" {
			t.Errorf("a name in a comment became a line of its own: %q in\n%s", lines[i], b.String())
		}
	}
	if !strings.Contains(b.String(), `ALTER ROLE "x`) {
		t.Errorf("the lock statement is missing:\n%s", b.String())
	}
}
