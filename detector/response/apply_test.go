package response

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// secret is a value of the sensitive table: it must never appear in a plan or a line.
const secret = "seeded-secret@example.com"

// responseFixture is a database with public.users owned by rsp_owner, role rsp_mallory
// reading it by a direct grant, a column grant and membership of rsp_reporting, and a
// responder role with what docs/response.md asks for.
type responseFixture struct {
	db        *pgtest.Database
	su        *pgx.Conn
	version   int // the server's major version
	responder string
}

func newResponseFixture(t *testing.T, responder string, responderAttrs ...string) *responseFixture {
	t.Helper()
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, "rsp_owner", "NOLOGIN")
	db.CreateRole(t, "rsp_reporting", "NOLOGIN")
	db.CreateRole(t, "rsp_mallory")
	db.CreateRole(t, responder, responderAttrs...)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text NOT NULL, password_hash text NOT NULL);
		INSERT INTO public.users SELECT g, CASE g WHEN 1 THEN '`+secret+`' ELSE 'u' || g || '@example.com' END, 'x' FROM generate_series(1, 5000) g;
		ALTER TABLE public.users OWNER TO rsp_owner;
		GRANT SELECT ON public.users TO rsp_mallory;
		GRANT SELECT (email) ON public.users TO rsp_mallory;
		GRANT SELECT ON public.users TO rsp_reporting;
		GRANT SELECT (id) ON public.users TO PUBLIC`)
	su, err := pgx.Connect(t.Context(), db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = su.Close(context.Background()) })
	f := &responseFixture{db: db, su: su, version: db.Server.Version(), responder: responder}
	// 16+ records who granted a membership, and a role revokes only what it (or a role
	// it acts as) granted: the responder grants it. Before 16 any grantor will do.
	if f.version >= 16 {
		db.Exec(t, `GRANT rsp_reporting TO `+responder+` WITH ADMIN OPTION, INHERIT FALSE, SET FALSE`)
		db.Exec(t, `GRANT rsp_reporting TO rsp_mallory GRANTED BY `+responder)
	} else {
		db.Exec(t, `GRANT rsp_reporting TO rsp_mallory`)
	}
	return f
}

// grantResponder gives the responder the least each action needs (docs/response.md).
func (f *responseFixture) grantResponder(t *testing.T) {
	t.Helper()
	f.db.Exec(t, `GRANT pg_signal_backend, pg_read_all_stats TO `+f.responder+`;
		ALTER ROLE `+f.responder+` CREATEROLE;
		GRANT rsp_owner TO `+f.responder)
	if f.version >= 16 {
		f.db.Exec(t, `GRANT rsp_mallory TO `+f.responder+` WITH ADMIN OPTION, INHERIT FALSE, SET FALSE`)
	}
}

// dump is mallory's slow read of the whole table, running until terminated.
type dump struct {
	conn   *pgx.Conn
	done   chan error
	cancel context.CancelFunc
}

func startDump(t *testing.T, f *responseFixture) *dump {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), f.db.DSN("rsp_mallory"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &dump{conn: conn, done: make(chan error, 1), cancel: cancel}
	go func() {
		rows, err := conn.Query(ctx, "SELECT email, pg_sleep(0.01) FROM public.users")
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
		}
		d.done <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-d.done
		_ = conn.Close(context.Background())
	})
	pid := conn.PgConn().PID()
	waitFor(t, f.su, "the dump to be active", `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%')`, pid)
	return d
}

// waitFor polls query (a boolean) as the superuser until it is true.
func waitFor(t *testing.T, su *pgx.Conn, what, query string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		if err := su.QueryRow(t.Context(), query, args...).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionOf is pid's pg_stat_activity row as evidence capture records it.
func sessionOf(t *testing.T, su *pgx.Conn, pid uint32) evidence.Session {
	t.Helper()
	s := evidence.Session{PID: int32(pid)}
	if err := su.QueryRow(t.Context(), `SELECT backend_start, usename, datname FROM pg_stat_activity WHERE pid = $1`, pid).
		Scan(&s.BackendStart, &s.Role, &s.Database); err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *responseFixture) evidence(sessions ...evidence.Session) *evidence.Evidence {
	return &evidence.Evidence{
		Fingerprint: "0123456789abcdef", Rule: "SensitiveBulkRead",
		Labels:   map[string]string{model.LabelRole: "rsp_mallory", model.LabelDatabase: f.db.Name, model.LabelTable: "public.users"},
		Sessions: sessions,
		Privileges: &evidence.Privileges{Role: "rsp_mallory", Table: "public.users", CanLogin: true, Effective: []string{"SELECT"},
			Grants: []evidence.Grant{
				{Via: evidence.ViaDirect, Grantee: "rsp_mallory"},
				{Via: evidence.ViaDirect, Grantee: "rsp_mallory", Columns: []string{"email"}},
				{Via: evidence.ViaMembership, Grantee: "rsp_reporting"},
				{Via: evidence.ViaPublic, Grantee: "PUBLIC", Columns: []string{"id"}},
			}},
	}
}

func sqlstate(err error) string {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code
	}
	return ""
}

func outcomes(r *Result) map[string]StepResult {
	m := make(map[string]StepResult)
	for _, s := range r.Steps {
		m[string(s.Action)+" "+s.Target] = s
	}
	return m
}

// TestResponseStopsARead responds to a real dump with a least-privileged responder:
// the dump ends with admin_shutdown, the role cannot log in, its grants and membership
// are gone, a session that reused nothing of the evidence is left alone, and the
// PUBLIC grant is refused, not revoked.
func TestResponseStopsARead(t *testing.T) {
	f := newResponseFixture(t, "rsp_responder")
	f.grantResponder(t)
	d := startDump(t, f)
	dumpSession := sessionOf(t, f.su, d.conn.PgConn().PID())
	// Another session of mallory's, connected now: the evidence's pid with an earlier
	// backend_start stands for a pid the server has since given to a new session.
	other := f.db.Conn(t, "rsp_mallory")
	stale := sessionOf(t, f.su, other.PgConn().PID())
	stale.BackendStart = stale.BackendStart.Add(-time.Hour)

	p, err := NewPlan(f.evidence(dumpSession, stale), []Action{Terminate, LockRole, Revoke}, Guard{DetectorRole: "rsp_detector"})
	if err != nil {
		t.Fatal(err)
	}
	var printed strings.Builder
	if _, err := p.WriteTo(&printed); err != nil {
		t.Fatal(err)
	}
	res := Apply(t.Context(), f.db.Conn(t, "rsp_responder"), p)

	select {
	case err := <-d.done:
		if got := sqlstate(err); got != "57P01" {
			t.Errorf("the dump ended with %v (SQLSTATE %q), want admin_shutdown 57P01", err, got)
		}
		d.done <- err // for the clean-up
	case <-time.After(10 * time.Second):
		t.Error("the dump still runs 10 s after the response")
	}
	if err := other.Ping(t.Context()); err != nil {
		t.Errorf("the session whose pid matched with another backend_start was terminated: %v", err)
	}
	if _, err := pgx.Connect(t.Context(), f.db.DSN("rsp_mallory")); sqlstate(err) != "28000" {
		t.Errorf("rsp_mallory logging in: got %v, want 28000 (not permitted to log in)", err)
	}
	var table, column, member bool
	if err := f.su.QueryRow(t.Context(), `SELECT has_table_privilege('rsp_mallory', 'public.users', 'SELECT'),
		has_column_privilege('rsp_mallory', 'public.users', 'email', 'SELECT'), pg_has_role('rsp_mallory', 'rsp_reporting', 'MEMBER')`).
		Scan(&table, &column, &member); err != nil {
		t.Fatal(err)
	}
	if table || column || member {
		t.Errorf("after the revoke: SELECT on the table %v, on email %v, member of rsp_reporting %v; want none", table, column, member)
	}

	got := outcomes(res)
	for key, want := range map[string]Outcome{
		"terminate session pid " + itoa(dumpSession.PID): Done,
		"terminate session pid " + itoa(stale.PID):       NothingToDo,
		"lock_role role rsp_mallory":                     Done,
		"revoke SELECT on public.users":                  Done,
		"revoke membership of rsp_reporting":             Done,
		"revoke SELECT of PUBLIC on public.users":        Refused,
	} {
		if got[key].Outcome != want {
			t.Errorf("%s: got %q (%s), want %q", key, got[key].Outcome, got[key].Detail, want)
		}
	}
	// REVOKE on the table takes its column grants too: the column step finds nothing.
	if o := got["revoke SELECT (email) on public.users"].Outcome; o != Done && o != NothingToDo {
		t.Errorf("revoke SELECT (email): got %q, want done or nothing to do", o)
	}
	if d := got["terminate session pid "+itoa(stale.PID)].Detail; !strings.Contains(d, "another session now: not terminated") {
		t.Errorf("the stale session's detail: got %q", d)
	}
	if res.Outcome() != OutcomePartial || res.Failed() {
		t.Errorf("got outcome %s (failed %v), want partial (the PUBLIC grant refused) and no failure", res.Outcome(), res.Failed())
	}

	// Again: everything is done already.
	again := outcomes(Apply(t.Context(), f.db.Conn(t, "rsp_responder"), p))
	for key, s := range again {
		if s.Outcome != NothingToDo && s.Outcome != Refused {
			t.Errorf("applied twice, %s: got %q (%s), want nothing to do", key, s.Outcome, s.Detail)
		}
	}

	lines, err := json.Marshal(Record(p, res, Origin{By: ByRespond, Actor: "test@host", Time: time.Now()}))
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{printed.String(), string(lines)} {
		if strings.Contains(out, secret) {
			t.Errorf("a value of the table was printed:\n%s", out)
		}
	}
	if strings.Contains(string(lines), "pg_terminate_backend") || strings.Contains(string(lines), "REVOKE") {
		t.Errorf("the alert lines hold SQL:\n%s", lines)
	}
}

// TestResponseWithoutPrivileges applies with a responder that has pg_signal_backend
// alone: each step fails with the reason, the dump goes on, and every step is reported.
func TestResponseWithoutPrivileges(t *testing.T) {
	f := newResponseFixture(t, "rsp_weak")
	f.db.Exec(t, `GRANT pg_signal_backend TO rsp_weak`)
	d := startDump(t, f)
	p, err := NewPlan(f.evidence(sessionOf(t, f.su, d.conn.PgConn().PID())), []Action{Terminate, LockRole, Revoke}, Guard{})
	if err != nil {
		t.Fatal(err)
	}
	res := Apply(t.Context(), f.db.Conn(t, "rsp_weak"), p)
	got := outcomes(res)
	wantFailed := map[string]string{
		"terminate session pid " + itoa(int32(d.conn.PgConn().PID())): "grant it pg_read_all_stats",
		"lock_role role rsp_mallory":                                  "permission denied",
		"revoke SELECT on public.users":                               "permission denied",
		"revoke membership of rsp_reporting":                          "admin option",
	}
	wantOutcome := OutcomeFailed
	if f.version >= 16 {
		// The fixture made the responder the membership's grantor, with ADMIN OPTION
		// (16+ lets only the grantor revoke it): that step is done, the rest fail.
		delete(wantFailed, "revoke membership of rsp_reporting")
		if o := got["revoke membership of rsp_reporting"].Outcome; o != Done {
			t.Errorf("revoke membership of rsp_reporting: got %q, want done by its grantor", o)
		}
		wantOutcome = OutcomePartial
	}
	for key, wantDetail := range wantFailed {
		if got[key].Outcome != Failed || !strings.Contains(got[key].Detail, wantDetail) {
			t.Errorf("%s: got %q (%s), want failed saying %q", key, got[key].Outcome, got[key].Detail, wantDetail)
		}
	}
	if len(res.Steps) != len(p.Steps)+len(p.Refused) || res.Outcome() != wantOutcome || !res.Failed() {
		t.Errorf("got %d outcomes, outcome %s; want %d, %s", len(res.Steps), res.Outcome(), len(p.Steps)+len(p.Refused), wantOutcome)
	}
	select {
	case err := <-d.done:
		t.Errorf("the dump ended: %v", err)
		d.done <- err
	default:
	}
}

// TestResponseRefusesTheRespondersOwnRole: at apply time, a plan against the
// responder's own role is refused, step by step.
func TestResponseRefusesTheRespondersOwnRole(t *testing.T) {
	f := newResponseFixture(t, "rsp_self")
	f.grantResponder(t)
	ev := f.evidence()
	ev.Labels[model.LabelRole], ev.Privileges = "rsp_self", nil
	p, err := NewPlan(ev, []Action{LockRole}, Guard{})
	if err != nil {
		t.Fatal(err)
	}
	res := Apply(t.Context(), f.db.Conn(t, "rsp_self"), p)
	if len(res.Steps) != 1 || res.Steps[0].Outcome != Refused || !strings.Contains(res.Steps[0].Detail, "the responder's own role") {
		t.Errorf("got %+v, want lock_role refused as the responder's own role", res.Steps)
	}
	var canLogin bool
	if err := f.su.QueryRow(t.Context(), `SELECT rolcanlogin FROM pg_roles WHERE rolname = 'rsp_self'`).Scan(&canLogin); err != nil || !canLogin {
		t.Errorf("the responder locked itself: %v %v", canLogin, err)
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
