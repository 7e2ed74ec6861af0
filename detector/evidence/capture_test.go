package evidence

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Every way a role can hold SELECT on a table is told apart, since each is taken away
// differently (docs/response.md).
func TestCapturePrivilegesSaysHowTheRoleHoldsSelect(t *testing.T) {
	db := pgtest.NewDatabase(t)
	p := db.Name + "_"
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, password_hash text)`)
	db.Exec(t, `CREATE TABLE public.open_table (id int, email text)`)
	for _, r := range []string{"direct", "member", "columns", "owner", "reader", "nothing"} {
		db.CreateRole(t, p+r)
	}
	db.CreateRole(t, p+"super", "SUPERUSER")
	db.CreateRole(t, p+"bypass", "BYPASSRLS")
	db.CreateRole(t, p+"group", "NOLOGIN")
	db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users TO %[1]sdirect, %[1]sgroup, %[1]sbypass;
		GRANT %[1]sgroup TO %[1]smember;
		GRANT SELECT (id, email) ON public.users TO %[1]scolumns;
		ALTER TABLE public.users OWNER TO %[1]sowner;
		GRANT pg_read_all_data TO %[1]sreader;
		GRANT SELECT ON public.open_table TO PUBLIC`, p))
	conn := db.Conn(t, "postgres")

	for _, tc := range []struct {
		role, table string
		want        []Grant
		effective   bool // SELECT on the whole table
	}{
		{p + "direct", "public.users", []Grant{{Via: ViaDirect, Grantee: p + "direct"}}, true},
		{p + "member", "public.users", []Grant{{Via: ViaMembership, Grantee: p + "group"}}, true},
		{p + "columns", "public.users", []Grant{{Via: ViaDirect, Grantee: p + "columns", Columns: []string{"id", "email"}}}, false},
		{p + "owner", "public.users", []Grant{{Via: ViaOwner, Grantee: p + "owner"}}, true},
		{p + "reader", "public.users", []Grant{{Via: ViaReadAll, Grantee: "pg_read_all_data"}}, true},
		{p + "super", "public.users", []Grant{{Via: ViaSuperuser, Grantee: p + "super"}}, true},
		{p + "bypass", "public.users", []Grant{{Via: ViaDirect, Grantee: p + "bypass"}}, true},
		{p + "nothing", "public.users", []Grant{}, false},
		{p + "nothing", "public.open_table", []Grant{{Via: ViaPublic, Grantee: "PUBLIC"}}, true},
	} {
		t.Run(strings.TrimPrefix(tc.role, p)+" on "+tc.table, func(t *testing.T) {
			e := New(Input{Alert: model.Alert{Fingerprint: "0123456789abcdef", Labels: map[string]string{
				model.LabelRole: tc.role, model.LabelTable: tc.table, model.LabelDatabase: db.Name}}}, time.Now())
			Capture(t.Context(), conn, e)
			if len(e.Problems) > 0 || e.Privileges == nil {
				t.Fatalf("problems %q, privileges %+v", e.Problems, e.Privileges)
			}
			got := e.Privileges
			if !slices.EqualFunc(got.Grants, tc.want, func(a, b Grant) bool {
				return a.Via == b.Via && a.Grantee == b.Grantee && slices.Equal(a.Columns, b.Columns)
			}) {
				t.Errorf("grants: got %+v, want %+v", got.Grants, tc.want)
			}
			if slices.Contains(got.Effective, "SELECT") != tc.effective {
				t.Errorf("effective: got %v, want SELECT %v", got.Effective, tc.effective)
			}
			if got.BypassRLS != strings.HasSuffix(tc.role, "bypass") && !got.Superuser {
				t.Errorf("bypassrls: got %v", got.BypassRLS)
			}
		})
	}
}

// What cannot be captured is said, and the rest is kept.
func TestCaptureSaysWhatItCouldNotLearn(t *testing.T) {
	db := pgtest.NewDatabase(t)
	conn := db.Conn(t, "postgres")
	e := New(Input{
		Alert: model.Alert{Fingerprint: "0123456789abcdef", Rule: "R", Labels: map[string]string{
			model.LabelRole: "nobody_" + db.Name, model.LabelTable: "public.users", model.LabelDatabase: "elsewhere"}},
		Trigger: &model.Event{Source: "statements", QueryID: 42, Statement: "SELECT email FROM users"},
	}, time.Now())
	Capture(t.Context(), conn, e)
	want := []string{
		"statement counters: no pg_stat_statements entry for query id 42 of nobody_" + db.Name + " in elsewhere (evicted, or reset)",
		"privileges: public.users is in database elsewhere; the detector is connected to " + db.Name,
	}
	if !slices.Equal(e.Problems, want) {
		t.Errorf("problems: got %q, want %q", e.Problems, want)
	}
	if e.Trigger.Statement != "SELECT email FROM users" || len(e.Sessions) != 0 {
		t.Errorf("got trigger %+v sessions %+v, want the trigger kept and no session", e.Trigger, e.Sessions)
	}
}
