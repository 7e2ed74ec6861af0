package response

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Outcome is what became of one step.
type Outcome string

// Step outcomes.
const (
	Done        Outcome = "done"
	NothingToDo Outcome = "nothing to do"
	Failed      Outcome = "failed"
	Refused     Outcome = "refused"
)

// StepResult is one step's or refusal's outcome. Detail says what happened in words
// ("terminated", "already gone", "permission denied to alter role (SQLSTATE 42501)").
type StepResult struct {
	Action Action
	Target string
	// SQL is the statement run, "" for a refusal.
	SQL     string
	Outcome Outcome
	Detail  string
	// Err is the server's error of a failed step.
	Err error
}

// Result is every step's and refusal's outcome, steps first, in plan order.
type Result struct {
	Steps []StepResult
	// Responder is the responder connection's role (current_user).
	Responder string
}

// Response outcomes, the ResponseTaken line's outcome label.
const (
	OutcomeApplied = "applied" // every step done or had nothing to do; nothing refused
	OutcomePartial = "partial" // some steps done, others failed or refused
	OutcomeRefused = "refused" // nothing done: everything refused
	OutcomeFailed  = "failed"  // nothing done, and a step failed
	OutcomeShadow  = "shadow"  // nothing done: the automatic response's shadow mode
)

// Outcome sums the result up as applied, partial, refused or failed.
func (r *Result) Outcome() string {
	var ok, failed, refused int
	for _, s := range r.Steps {
		switch s.Outcome {
		case Done, NothingToDo:
			ok++
		case Failed:
			failed++
		case Refused:
			refused++
		}
	}
	switch {
	case failed == 0 && refused == 0:
		return OutcomeApplied
	case ok > 0:
		return OutcomePartial
	case failed > 0:
		return OutcomeFailed
	default:
		return OutcomeRefused
	}
}

// Failed reports whether a step failed.
func (r *Result) Failed() bool {
	for _, s := range r.Steps {
		if s.Outcome == Failed {
			return true
		}
	}
	return false
}

// Apply runs the plan's steps on conn, the responder's connection, each on its own (a
// failure does not stop the next step, nor undo the previous), and returns every
// step's outcome and the plan's refusals. Before it acts it refuses the steps that
// would act on the responder's own role, or lock or revoke from a role that is a
// superuser now. When ctx is cancelled, the steps not yet run fail with its error.
func Apply(ctx context.Context, conn *pgx.Conn, p *Plan) *Result {
	res := &Result{}
	var ownRole, sessionRole string
	whoErr := conn.QueryRow(ctx, "SELECT current_user, session_user").Scan(&ownRole, &sessionRole)
	res.Responder = ownRole
	var superuser bool
	var superErr error
	if whoErr == nil && p.Role != ownRole && p.Role != sessionRole {
		superErr = conn.QueryRow(ctx, "SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = $1), false)", p.Role).Scan(&superuser)
	}
	for _, st := range p.Steps {
		r := StepResult{Action: st.Action, Target: st.Target, SQL: st.SQL}
		switch {
		case whoErr != nil:
			r.Outcome, r.Err, r.Detail = Failed, whoErr, "the responder's role could not be read: "+serverError(whoErr)
		case p.Role == ownRole || p.Role == sessionRole:
			r.Outcome, r.SQL, r.Detail = Refused, "", "the responder's own role (response.dsn): it would cut itself off"
		case st.Action != Terminate && superErr != nil:
			r.Outcome, r.Err, r.Detail = Failed, superErr, "the role's attributes could not be read: "+serverError(superErr)
		case st.Action != Terminate && superuser:
			r.Outcome, r.SQL, r.Detail = Refused, "", "superuser: the responder cannot act on one and should not be able to; a superuser acts by hand"
		default:
			r.Outcome, r.Detail, r.Err = runStep(ctx, conn, st)
		}
		res.Steps = append(res.Steps, r)
	}
	res.Steps = append(res.Steps, Refusals(p).Steps...)
	return res
}

func runStep(ctx context.Context, conn *pgx.Conn, st Step) (Outcome, string, error) {
	switch st.Action {
	case Terminate:
		return terminate(ctx, conn, st)
	case LockRole:
		return change(ctx, conn, st,
			"SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", []any{st.role},
			"locked (NOLOGIN)", "already NOLOGIN", "can still log in")
	case Revoke:
		if st.member != "" {
			return revokeMembership(ctx, conn, st)
		}
		if len(st.columns) > 0 {
			return change(ctx, conn, st, `
				SELECT EXISTS (SELECT FROM pg_attribute at, aclexplode(at.attacl) a
					WHERE at.attrelid = $1::regclass AND at.attname = ANY($3)
					AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $2) AND a.privilege_type = 'SELECT')`,
				[]any{st.table, st.role, st.columns},
				"revoked", "not granted (any more)", "still granted (only its grantor, or a member of the table's owner, can revoke it)")
		}
		return change(ctx, conn, st, `
			SELECT EXISTS (SELECT FROM pg_class c, aclexplode(c.relacl) a
				WHERE c.oid = $1::regclass
				AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $2) AND a.privilege_type = 'SELECT')`,
			[]any{st.table, st.role},
			"revoked", "not granted (any more)", "still granted (only its grantor, or a member of the table's owner, can revoke it)")
	}
	return Failed, "unknown action " + string(st.Action), nil
}

// change runs a step whose effect a query (held) can see: it does nothing when held
// is false already, and fails when it is still true afterwards. A REVOKE that cannot
// revoke only warns; the check after it is what tells.
func change(ctx context.Context, conn *pgx.Conn, st Step, held string, args []any, done, nothing, still string) (Outcome, string, error) {
	var before bool
	if err := conn.QueryRow(ctx, held, args...).Scan(&before); errors.Is(err, pgx.ErrNoRows) {
		return Failed, "role " + st.role + " does not exist (any more)", nil
	} else if err != nil {
		return Failed, serverError(err), err
	}
	if !before {
		return NothingToDo, nothing, nil
	}
	if _, err := conn.Exec(ctx, st.SQL); err != nil {
		return Failed, serverError(err), err
	}
	var after bool
	if err := conn.QueryRow(ctx, held, args...).Scan(&after); err != nil {
		return Failed, "done, but the check afterwards failed: " + serverError(err), err
	}
	if after {
		return Failed, still, nil
	}
	return Done, done, nil
}

func revokeMembership(ctx context.Context, conn *pgx.Conn, st Step) (Outcome, string, error) {
	const direct = `SELECT EXISTS (SELECT FROM pg_auth_members m
		WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = $1)
		AND m.member = (SELECT oid FROM pg_roles WHERE rolname = $2))`
	var isDirect, isMember bool
	err := conn.QueryRow(ctx, direct+`, coalesce(pg_has_role($2, $1, 'MEMBER'), false)`, st.member, st.role).Scan(&isDirect, &isMember)
	if err != nil {
		return Failed, serverError(err), err
	}
	switch {
	case !isDirect && isMember:
		return Failed, "a member of " + st.member + " only through another role: revoke that membership by hand", nil
	case !isDirect:
		return NothingToDo, "not a member (any more)", nil
	}
	return change(ctx, conn, st, direct, []any{st.member, st.role},
		"revoked", "not a member (any more)", "still a member (it takes ADMIN OPTION on "+st.member+"; on 16+ only the membership's grantor, or a role acting as it, can revoke it)")
}

// terminate runs the guarded pg_terminate_backend. No row means no session has that
// pid and backend_start now; a second look tells a session that is gone from a pid
// reused by another session, and from a backend_start the responder may not see.
func terminate(ctx context.Context, conn *pgx.Conn, st Step) (Outcome, string, error) {
	rows, err := conn.Query(ctx, st.SQL)
	if err != nil {
		return Failed, serverError(err), err
	}
	signalled, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	if err != nil {
		return Failed, serverError(err), err
	}
	if len(signalled) > 0 {
		if signalled[0] {
			return Done, "terminated", nil
		}
		return Failed, "signalled, but still running after " + strconv.Itoa(int(terminateTimeout.Seconds())) + " s", nil
	}
	var startVisible bool
	err = conn.QueryRow(ctx, "SELECT backend_start IS NOT NULL FROM pg_stat_activity WHERE pid = $1", st.pid).Scan(&startVisible)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return NothingToDo, "already gone", nil
	case err != nil:
		return Failed, serverError(err), err
	case !startVisible:
		return Failed, "the responder cannot see the session's backend_start, which guards against a reused pid: grant it pg_read_all_stats", nil
	default:
		return NothingToDo, "already gone (pid " + strconv.Itoa(int(st.pid)) + " is another session now: not terminated)", nil
	}
}

// serverError is the words of a server error: its message and SQLSTATE, never its
// detail (which may quote a value).
func serverError(err error) string {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return fmt.Sprintf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	}
	return err.Error()
}

// NotApplied is the result of a plan that could not be applied at all (the responder
// could not connect): every step failed with err, and the refusals stand.
func NotApplied(p *Plan, err error) *Result {
	res := &Result{}
	for _, st := range p.Steps {
		res.Steps = append(res.Steps, StepResult{Action: st.Action, Target: st.Target, SQL: st.SQL, Outcome: Failed,
			Detail: "not run: " + serverError(err), Err: err})
	}
	res.Steps = append(res.Steps, Refusals(p).Steps...)
	return res
}

// Refusals is the result of a plan that runs nothing: its refusals, each with its
// reason (a plan with no step, applied).
func Refusals(p *Plan) *Result {
	res := &Result{}
	for _, rf := range p.Refused {
		res.Steps = append(res.Steps, StepResult{Action: rf.Action, Target: rf.Target, Outcome: Refused, Detail: rf.Reason})
	}
	return res
}
