// Package response turns an alert's evidence into the SQL that stops a read —
// terminating the reading sessions, locking the role, revoking its SELECT — runs it on
// the responder's own connection (response.dsn), and records every response, applied,
// refused, failed or only imagined (the automatic response's shadow mode), as alert
// lines of the rule ResponseTaken.
//
// A Plan is exact and printable: the statements Apply runs are the ones Plan.WriteTo
// prints, with values inlined safely (pids as integers, times as timestamptz literals,
// names quoted). Nothing in it was read from a sensitive table: it is built from the
// evidence, which holds none.
//
// It is not evidence capture (package detector/evidence), not the decision to respond
// (a human running `pgtripwire respond`, or the automatic response of precise rules),
// and it never acts on a role a Guard protects: superusers, the detector's and the
// responder's own roles, and application roles unless forced.
package response

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/model"
)

// Action is one way of stopping a read.
type Action string

// Actions, in the order a plan takes them: the sessions first, so that a role being
// locked or losing a grant is not still reading meanwhile.
const (
	// Terminate ends each captured session of the role, if it is still the same
	// session (pid and backend_start): needs pg_signal_backend and pg_read_all_stats.
	Terminate Action = "terminate"
	// LockRole makes the role NOLOGIN. Its existing sessions stay until terminated:
	// lock together with Terminate. Needs CREATEROLE (16+: and ADMIN OPTION on the role).
	LockRole Action = "lock_role"
	// Revoke takes away each way the role holds SELECT on the alert's table that can be
	// taken away from it alone.
	Revoke Action = "revoke"
)

// Actions lists every action in plan order.
var Actions = []Action{Terminate, LockRole, Revoke}

// ParseAction reads an action's name.
func ParseAction(s string) (Action, error) {
	if a := Action(s); slices.Contains(Actions, a) {
		return a, nil
	}
	return "", fmt.Errorf("%q is not an action (terminate, lock_role, revoke)", s)
}

// Guard is who a response must not act on. The detector's role and (at apply time)
// the responder's own role are always refused; a superuser is never locked nor
// revoked from (its sessions may be terminated, which only a superuser responder can).
type Guard struct {
	// ApplicationRoles (roles.application) are refused unless Force: a compromised
	// application credential is a real case, but acting on it takes the application
	// down, and a human decides that.
	ApplicationRoles []string
	// DetectorRole is the role of database.dsn: responding to it would blind the
	// detector.
	DetectorRole string
	// Force allows acting on an application role.
	Force bool
}

// Step is one statement of a plan.
type Step struct {
	Action Action
	// Target says what the step acts on, without SQL: "session pid 4242",
	// "role mallory", "SELECT on public.users", "membership of reporting".
	Target string
	// SQL is the exact statement Apply runs.
	SQL string

	// What Apply checks before and after (the statement alone does not say: a REVOKE
	// that revokes nothing only warns).
	pid          int32
	backendStart time.Time
	role         string
	table        string   // schema-qualified, quoted
	columns      []string // column grant
	member       string   // membership: the granted role
}

// Refusal is an action, or part of one, that a plan will not take, and why.
type Refusal struct {
	Action Action
	Target string
	Reason string
}

// Plan is what a response will do: the steps in order and what it refuses.
type Plan struct {
	// Fingerprint and Rule are the alert's being responded to.
	Fingerprint string
	Rule        string
	// Role is the role acted on; Database the alert's database, when known.
	Role     string
	Database string
	// Actions are the actions asked for, in plan order.
	Actions []Action
	Steps   []Step
	Refused []Refusal
}

// ErrNothingToAct is returned by NewPlan for evidence that names neither a role nor a
// session.
var ErrNothingToAct = errors.New("the evidence names no role and holds no session: nothing to respond to")

// NewPlan plans the actions against the evidence. It returns an error when no action
// is given, an action is unknown, or the evidence names no role (ErrNothingToAct);
// everything else it will not do is in the plan's Refused, with the reason, so that
// refusals are reported and recorded like the steps.
func NewPlan(ev *evidence.Evidence, actions []Action, g Guard) (*Plan, error) {
	if len(actions) == 0 {
		return nil, errors.New("plan a response: no action (terminate, lock_role, revoke)")
	}
	for _, a := range actions {
		if _, err := ParseAction(string(a)); err != nil {
			return nil, fmt.Errorf("plan a response: %w", err)
		}
	}
	p := &Plan{Fingerprint: ev.Fingerprint, Rule: ev.Rule, Role: roleOf(ev), Database: ev.Labels[model.LabelDatabase]}
	if p.Role == "" {
		return nil, fmt.Errorf("plan a response to %s: %w", ev.Fingerprint, ErrNothingToAct)
	}
	if p.Database == "" && len(ev.Sessions) > 0 {
		p.Database = ev.Sessions[0].Database
	}
	for _, a := range Actions {
		if slices.Contains(actions, a) {
			p.Actions = append(p.Actions, a)
		}
	}

	if reason := guarded(p.Role, g); reason != "" {
		for _, a := range p.Actions {
			p.refuse(a, "role "+p.Role, reason)
		}
		return p, nil
	}
	superuser := ev.Privileges != nil && ev.Privileges.Role == p.Role && ev.Privileges.Superuser
	for _, a := range p.Actions {
		switch a {
		case Terminate:
			p.planTerminate(ev)
		case LockRole:
			if superuser {
				p.refuse(a, "role "+p.Role, "superuser: the responder cannot lock one and should not be able to; a superuser acts by hand")
				continue
			}
			p.Steps = append(p.Steps, Step{Action: LockRole, Target: "role " + p.Role, role: p.Role,
				SQL: "ALTER ROLE " + ident(p.Role) + " NOLOGIN"})
		case Revoke:
			p.planRevoke(ev.Privileges, g)
		}
	}
	return p, nil
}

// roleOf is the role the response acts on: the alert's, else the privileges', else the
// triggering (or first) session's.
func roleOf(ev *evidence.Evidence) string {
	if r := ev.Labels[model.LabelRole]; r != "" {
		return r
	}
	if ev.Privileges != nil && ev.Privileges.Role != "" {
		return ev.Privileges.Role
	}
	for _, s := range ev.Sessions {
		if s.Trigger {
			return s.Role
		}
	}
	if len(ev.Sessions) > 0 {
		return ev.Sessions[0].Role
	}
	return ""
}

// guarded says why role must not be acted on at all, or "".
func guarded(role string, g Guard) string {
	switch {
	case g.DetectorRole != "" && role == g.DetectorRole:
		return "the detector's own role (database.dsn): acting on it would blind the detector"
	case slices.Contains(g.ApplicationRoles, role) && !g.Force:
		return "an application role (roles.application): acting on it takes the application down; a human decides, with --force"
	}
	return ""
}

func (p *Plan) refuse(a Action, target, reason string) {
	p.Refused = append(p.Refused, Refusal{Action: a, Target: target, Reason: reason})
}

// terminateTimeout is how long pg_terminate_backend waits for the session to exit,
// so that "terminated" means gone, not only signalled.
const terminateTimeout = 5 * time.Second

func (p *Plan) planTerminate(ev *evidence.Evidence) {
	n := 0
	for _, s := range ev.Sessions {
		target := "session pid " + strconv.Itoa(int(s.PID))
		switch {
		case s.Role != p.Role:
			// The sessions of the alert's client address may be another role's.
			p.refuse(Terminate, target, "a session of role "+s.Role+", not of "+p.Role)
			continue
		case s.PID <= 0 || s.BackendStart.IsZero():
			p.refuse(Terminate, target, "the evidence lacks its pid or backend_start, which guard against a reused pid")
			continue
		}
		n++
		p.Steps = append(p.Steps, Step{
			Action: Terminate, Target: target, pid: s.PID, backendStart: s.BackendStart, role: s.Role,
			SQL: fmt.Sprintf("SELECT pg_terminate_backend(pid, %d) FROM pg_stat_activity WHERE pid = %d AND backend_start = %s::timestamptz AND usename = %s",
				terminateTimeout.Milliseconds(), s.PID, timestamptz(s.BackendStart), literal(s.Role)),
		})
	}
	if n == 0 && len(ev.Sessions) == 0 {
		p.refuse(Terminate, "sessions of "+p.Role, "the evidence holds no session of "+p.Role+" (none was connected when the alert fired)")
	}
}

func (p *Plan) planRevoke(pr *evidence.Privileges, g Guard) {
	switch {
	case pr == nil || pr.Table == "":
		p.refuse(Revoke, "SELECT of "+p.Role, "the evidence holds no privileges of "+p.Role+" on the table (not captured: see its problems)")
		return
	case pr.Role != p.Role:
		p.refuse(Revoke, "SELECT of "+p.Role, "the evidence's privileges are role "+pr.Role+"'s, not "+p.Role+"'s")
		return
	case pr.Superuser:
		p.refuse(Revoke, "SELECT on "+pr.Table, "superuser: every check passes, no grant to revoke; a superuser acts by hand")
		return
	}
	schema, name, err := catalog.ParseQualifiedName(pr.Table)
	if err != nil {
		p.refuse(Revoke, "SELECT on "+pr.Table, "the evidence's table name does not parse: "+err.Error())
		return
	}
	table := pgx.Identifier{schema, name}.Sanitize()
	if len(pr.Grants) == 0 {
		p.refuse(Revoke, "SELECT on "+pr.Table, p.Role+" held no SELECT on it when the evidence was captured")
	}
	for _, gr := range pr.Grants {
		switch gr.Via {
		case evidence.ViaDirect:
			st := Step{Action: Revoke, role: p.Role, table: table, columns: gr.Columns}
			if len(gr.Columns) == 0 {
				st.Target = "SELECT on " + pr.Table
				st.SQL = "REVOKE SELECT ON TABLE " + table + " FROM " + ident(p.Role)
			} else {
				st.Target = "SELECT (" + strings.Join(gr.Columns, ", ") + ") on " + pr.Table
				st.SQL = "REVOKE SELECT (" + idents(gr.Columns) + ") ON TABLE " + table + " FROM " + ident(p.Role)
			}
			p.Steps = append(p.Steps, st)
		case evidence.ViaMembership, evidence.ViaReadAll:
			member := gr.Grantee
			if gr.Via == evidence.ViaReadAll {
				member = "pg_read_all_data"
			}
			target := "membership of " + member
			switch {
			case member == "" || strings.EqualFold(member, "public"):
				p.refuse(Revoke, target, "the evidence does not name the role it is a member of")
			case member == g.DetectorRole:
				p.refuse(Revoke, target, "a membership of the detector's own role: revoke by hand")
			default:
				p.Steps = append(p.Steps, Step{Action: Revoke, Target: target, role: p.Role, member: member,
					SQL: "REVOKE " + ident(member) + " FROM " + ident(p.Role)})
			}
		case evidence.ViaOwner:
			p.refuse(Revoke, "ownership of "+pr.Table, "owns the table (as "+gr.Grantee+"): an owner's rights cannot be revoked; change the owner by hand")
		case evidence.ViaPublic:
			p.refuse(Revoke, "SELECT of PUBLIC on "+pr.Table, "granted to PUBLIC: revoking affects every role, do it by hand")
		case evidence.ViaSuperuser:
			p.refuse(Revoke, "SELECT on "+pr.Table, "superuser: every check passes, no grant to revoke; a superuser acts by hand")
		default:
			p.refuse(Revoke, "SELECT on "+pr.Table, "held in a way this version does not know ("+gr.Via+"): revoke by hand")
		}
	}
}

// WriteTo prints the plan: each step's SQL, after a comment naming its target, and
// each refusal as a comment, so that the output can be read, or pasted into psql.
func (p *Plan) WriteTo(w io.Writer) (int64, error) {
	// Names in comments are the clients' choice: no control character may end a
	// comment line early (the statements' own quoting covers the SQL).
	c := evidence.Printable
	var b strings.Builder
	fmt.Fprintf(&b, "-- Response to alert %s (%s): role %s", c(p.Fingerprint), c(p.Rule), c(p.Role))
	if p.Database != "" {
		fmt.Fprintf(&b, ", database %s", c(p.Database))
	}
	b.WriteString("\n")
	for _, s := range p.Steps {
		fmt.Fprintf(&b, "-- %s: %s\n%s;\n", s.Action, c(s.Target), s.SQL)
	}
	for _, r := range p.Refused {
		fmt.Fprintf(&b, "-- refused %s: %s: %s\n", r.Action, c(r.Target), c(r.Reason))
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// ident quotes an identifier, always, as pgx does.
func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func idents(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = ident(s)
	}
	return strings.Join(q, ", ")
}

// literal quotes a string constant as PostgreSQL's quote_literal does: E” with
// doubled backslashes when there is one, so that it means the same whatever
// standard_conforming_strings is.
func literal(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

// timestamptz is t as a timestamptz literal, to the microsecond PostgreSQL keeps.
func timestamptz(t time.Time) string {
	return "'" + t.UTC().Truncate(time.Microsecond).Format("2006-01-02 15:04:05.999999") + "+00'"
}
