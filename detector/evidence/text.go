package evidence

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// WriteText writes e for people: what fired, the trigger, the sessions, the statement,
// the privileges and the related alerts, each section only when it has something.
func WriteText(w io.Writer, e *Evidence) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) {
		for i, a := range args {
			if s, ok := a.(string); ok {
				args[i] = Printable(s)
			}
		}
		fmt.Fprintf(tw, format, args...)
	}
	p("Alert\t%s %s (%s)\n", e.Rule, e.Fingerprint, e.Severity)
	if e.Summary != "" {
		p("Summary\t%s\n", e.Summary)
	}
	p("Fired\t%s\n", e.FiredAt.UTC().Format(time.RFC3339))
	p("Captured\t%s\n", e.CapturedAt.UTC().Format(time.RFC3339Nano))
	for _, k := range slices.Sorted(maps.Keys(e.Labels)) {
		p("  %s\t%s\n", k, e.Labels[k])
	}
	if t := e.Trigger; t != nil {
		p("\nTrigger\t%s event at %s\n", t.Source, t.Time.UTC().Format(time.RFC3339Nano))
		if t.PID != 0 {
			p("  pid\t%d\n", t.PID)
		}
		if t.Relation != "" {
			p("  relation\t%s %s\n", t.Relation, strings.Join(t.SensitiveRead, ","))
		}
		p("  rows\t%d in %d call(s)", t.Rows, t.Calls)
		if t.RowsRead > t.Rows {
			p(", %d read", t.RowsRead)
		}
		p("\n")
		if t.QueryID != 0 {
			p("  query id\t%d\n", t.QueryID)
		}
		if t.Statement != "" {
			p("  statement\t%s\n", t.Statement)
		}
	}
	p("\nSessions\t%d\n", len(e.Sessions))
	for _, s := range e.Sessions {
		mark := ""
		if s.Trigger {
			mark = " (the triggering session)"
		}
		p("  pid %d%s\t%s@%s from %s:%d (%s), %s since %s\n", s.PID, mark, s.Role, s.Database,
			s.ClientAddr, s.ClientPort, s.Application, s.State, s.BackendStart.UTC().Format(time.RFC3339))
		if s.WaitEvent != "" {
			p("  \twaiting on %s/%s\n", s.WaitEventType, s.WaitEvent)
		}
		if s.Statement != "" {
			p("  \t%s\n", s.Statement)
		}
	}
	if st := e.Statement; st != nil {
		p("\nStatement\tquery id %d: %d call(s), %d row(s), %.1f ms in all (pg_stat_statements, cumulative)\n",
			st.QueryID, st.Calls, st.Rows, st.TotalExecMS)
	}
	if pv := e.Privileges; pv != nil {
		p("\nPrivileges\t%s on %s: %s\n", pv.Role, pv.Table, strings.Join(pv.Effective, ", "))
		var attrs []string
		for _, a := range []struct {
			on   bool
			name string
		}{{pv.Superuser, "SUPERUSER"}, {pv.BypassRLS, "BYPASSRLS"}, {pv.CanLogin, "LOGIN"}} {
			if a.on {
				attrs = append(attrs, a.name)
			}
		}
		if len(attrs) > 0 {
			p("  attributes\t%s\n", strings.Join(attrs, " "))
		}
		for _, g := range pv.Grants {
			cols := "the whole table"
			if len(g.Columns) > 0 {
				cols = "columns " + strings.Join(g.Columns, ", ")
			}
			p("  SELECT via %s\t%s (%s)\n", g.Via, g.Grantee, cols)
		}
	}
	if len(e.Related) > 0 {
		p("\nOther alerts of the role in the hour before\n")
		for _, r := range e.Related {
			p("  %s\t%s %s: %s\n", r.Time.UTC().Format(time.RFC3339), r.Rule, r.Fingerprint, r.Summary)
		}
	}
	if len(e.Problems) > 0 {
		p("\nNot captured\n")
		for _, pr := range e.Problems {
			p("  %s\n", pr)
		}
	}
	return tw.Flush()
}

// Printable returns s with every control character (a newline, a carriage return, an
// escape sequence) written as Go escapes it (\n, \x1b): a name is the client's choice,
// and a role called "x\nDROP TABLE users; --" must not become a line of its own in
// a comment of printed SQL, nor move a terminal's cursor.
func Printable(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}
