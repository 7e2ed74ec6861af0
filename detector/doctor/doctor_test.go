package doctor_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/doctor"
	"github.com/pgtripwire/pgtripwire/detector/ha"
	"github.com/pgtripwire/pgtripwire/detector/pgversion"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestRoleWithoutRights: a plain login role that can read the sensitive table but
// not the statistics, without REPLICATION, is told exactly what to grant and revoke.
func TestRoleWithoutRights(t *testing.T) {
	db := pgtest.NewDatabase(t)
	role := "doc_plain_" + db.Name[len(db.Name)-3:]
	db.CreateRole(t, role)
	db.Exec(t, `CREATE TABLE public.users (id int, email text);
		GRANT SELECT ON public.users TO `+role)
	table, err := config.NewSensitiveTable("public.users", "email")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := doctor.Run(t.Context(), db.Conn(t, role), doctor.Options{
		Tables: []config.SensitiveTable{table, mustTable(t, "public.missing")}, WAL: true, Slot: db.Name, Publication: "nope",
	})
	if err != nil {
		t.Fatal(err)
	}
	out := written(t, rep)
	if !rep.Failed() {
		t.Error("Failed() is false")
	}
	for _, want := range []string{
		"✗ role " + role + " statistics: not a member of pg_read_all_stats",
		"fix: as a superuser: GRANT pg_monitor TO " + role + ";",
		"✗ role " + role + " replication: no REPLICATION",
		"fix: as a superuser: ALTER ROLE " + role + " REPLICATION;",
		"! table public.users: the detector's role can SELECT it",
		"fix: REVOKE SELECT ON public.users FROM " + role + ";",
		"✗ table public.missing: does not exist",
		"✗ slot " + db.Name + ": missing",
		"✗ publication nope: missing",
		"! DDL event triggers: 0 of 3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// written is the report as doctor prints it, logged.
func written(t *testing.T, rep *doctor.Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := rep.Write(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
	return b.String()
}

func mustTable(t *testing.T, name string) config.SensitiveTable {
	t.Helper()
	st, err := config.NewSensitiveTable(name, "email")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestWALAutoWithoutSetup: with sources.wal.enabled auto (the default), what the WAL
// source lacks makes it off, not the detector broken: warnings that say so, with the
// fix, and no failure because of them.
func TestWALAutoWithoutSetup(t *testing.T) {
	db := pgtest.NewDatabase(t)
	role := "doc_auto_" + db.Name[len(db.Name)-3:]
	db.CreateRole(t, role)
	db.Exec(t, `CREATE TABLE public.users (id int, email text); GRANT pg_monitor TO `+role)
	rep, err := doctor.Run(t.Context(), db.Conn(t, role), doctor.Options{
		Tables: []config.SensitiveTable{mustTable(t, "public.users")}, WAL: true, WALAuto: true,
		Slot: db.Name, Publication: "nope",
	})
	if err != nil {
		t.Fatal(err)
	}
	out := written(t, rep)
	const off = "sources.wal.enabled is auto, so the WAL source is off"
	for _, want := range []string{
		"! role " + role + " replication: no REPLICATION: " + off,
		"! slot " + db.Name + ": missing: " + off,
		"! publication nope: missing: " + off,
		"fix: pgtripwire setup --config FILE --apply",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, failure := range []string{"✗ slot", "✗ publication", "✗ role " + role + " replication"} {
		if strings.Contains(out, failure) {
			t.Errorf("auto: got a failure %q for what the WAL source lacks, want a warning", failure)
		}
	}
}

// TestTrackTop: with pg_stat_statements.track = top (PostgreSQL's default) doctor warns
// that statements inside functions and DO blocks — the dynamic SQL an intruder builds —
// are not counted, and gives the line that counts them; with all, it is fine.
func TestTrackTop(t *testing.T) {
	for _, tc := range []struct {
		track string
		want  []string
		not   []string
	}{
		{"top", []string{
			"! pg_stat_statements.track: top: statements run inside functions and DO blocks are not counted",
			"the dynamic SQL an intruder builds in a DO block or a function",
			"what PL/pgSQL, SQL and SECURITY DEFINER functions read",
			"seen only by the table counters (UnexplainedSensitiveReads)",
			"    fix: in postgresql.conf: pg_stat_statements.track = all   (then SELECT pg_reload_conf();)\n",
			"    fix: or as a superuser: ALTER SYSTEM SET pg_stat_statements.track = 'all'; SELECT pg_reload_conf();\n",
		}, nil},
		{"all", []string{"✓ pg_stat_statements.track: all\n"}, []string{"pg_stat_statements.track = all"}},
	} {
		t.Run(tc.track, func(t *testing.T) {
			db := pgtest.NewDatabaseIn(t, pgtest.NewServer(t, map[string]string{"pg_stat_statements.track": tc.track}))
			db.Exec(t, `CREATE TABLE public.users (id int, email text)`)
			rep, err := doctor.Run(t.Context(), db.Conn(t, "postgres"), doctor.Options{
				Tables: []config.SensitiveTable{mustTable(t, "public.users")},
			})
			if err != nil {
				t.Fatal(err)
			}
			out := written(t, rep)
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("report lacks %q", want)
				}
			}
			for _, not := range tc.not {
				if strings.Contains(out, not) {
					t.Errorf("report has %q", not)
				}
			}
		})
	}
}

// With the log source on, doctor checks the server's logging and the log directory:
// a server that logs to stderr only, with statements not logged, gets each fix; one
// set up for the source (jsonlog files in a readable directory) passes.
func TestLogSettings(t *testing.T) {
	run := func(t *testing.T, db *pgtest.Database, opts doctor.LogOptions) string {
		t.Helper()
		rep, err := doctor.Run(t.Context(), db.Conn(t, "postgres"), doctor.Options{
			Tables: []config.SensitiveTable{mustTable(t, "public.users")}, Log: &opts,
		})
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := rep.Write(&b); err != nil {
			t.Fatal(err)
		}
		t.Logf("\n%s", b.String())
		return b.String()
	}
	t.Run("not set up", func(t *testing.T) {
		t.Parallel()
		srv := pgtest.NewServer(t, map[string]string{"log_min_error_statement": "panic", "log_line_prefix": "%m "})
		db := pgtest.NewDatabaseIn(t, srv)
		db.Exec(t, `CREATE TABLE public.users (id int, email text)`)
		out := run(t, db, doctor.LogOptions{Directory: t.TempDir() + "/missing", Format: "jsonlog", SyslogListen: "127.0.0.1:5514"})
		for _, want := range []string{
			`✗ log_destination: "stderr" lacks jsonlog, syslog`,
			"fix: in postgresql.conf: log_destination = 'stderr,jsonlog,syslog'   (then SELECT pg_reload_conf();)",
			"✗ logging_collector: off",
			"fix: in postgresql.conf: logging_collector = on   (then restart PostgreSQL)",
			"✗ log directory " + "",
			"not readable by the detector",
			"✗ log_min_error_statement: panic: failed statements are logged without their text",
			"fix: in postgresql.conf: log_min_error_statement = error",
			"✓ log_connections: off: failed logins are logged regardless",
			`! log_line_prefix: "%m " lacks %e %u %d %p %h`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("report lacks %q", want)
			}
		}
	})
	t.Run("set up", func(t *testing.T) {
		t.Parallel()
		srv, dir := pgtest.NewLoggingServer(t, "jsonlog", nil)
		db := pgtest.NewDatabaseIn(t, srv)
		db.Exec(t, `CREATE TABLE public.users (id int, email text)`)
		out := run(t, db, doctor.LogOptions{Directory: dir, Format: "jsonlog"})
		for _, want := range []string{
			"✓ log_destination: jsonlog", "✓ logging_collector: on", "✓ log directory " + dir + ": readable; newest file postgresql-",
			"✓ log_min_messages: warning", "✓ log_min_error_statement: error",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("report lacks %q", want)
			}
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "log") && (strings.HasPrefix(l, "✗") || strings.HasPrefix(l, "!")) {
				t.Errorf("a set-up server: got %q", l)
			}
		}
	})
}

// TestVersionAndFeatures: doctor prints the server's version and, for each feature of
// newer servers pgtripwire uses, whether this server has it or what is done instead;
// on 17 and later it warns of a slot made without failover, with the command that
// changes it in place.
func TestVersionAndFeatures(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int, email text)`)
	major := db.Server.Version()
	// A slot made by hand, as before PostgreSQL 17: no failover.
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, db.Name)
	rep, err := doctor.Run(t.Context(), db.Conn(t, "postgres"), doctor.Options{
		Tables: []config.SensitiveTable{mustTable(t, "public.users")}, WAL: true, Slot: db.Name,
	})
	if err != nil {
		t.Fatal(err)
	}
	out := written(t, rep)
	want := []string{fmt.Sprintf("✓ server version: %d.", major), "(supported: 14 to 18)"}
	for _, f := range pgversion.Features {
		if major*10000 >= f.Since {
			want = append(want, "✓ feature "+f.Name+": in use: ")
		} else {
			want = append(want, fmt.Sprintf("✓ feature %s: before %d: ", f.Name, f.Since/10000))
		}
	}
	failover := "! slot " + db.Name + " failover: not a failover slot"
	if major >= 17 {
		want = append(want, failover, "fix: as a superuser or the detector's role: psql \"dbname="+db.Name+" replication=database\" -c 'ALTER_REPLICATION_SLOT "+db.Name+" (FAILOVER true)'")
	} else if strings.Contains(out, failover) {
		t.Errorf("PostgreSQL %d has no failover slots, yet: %q", major, failover)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("report lacks %q", w)
		}
	}
}

// TestResponder: the role of response.dsn is told what it lacks to terminate and lock,
// a failure only when the automatic response depends on it.
func TestResponder(t *testing.T) {
	db := pgtest.NewDatabase(t)
	weak, able := db.Name+"_weak", db.Name+"_able"
	db.CreateRole(t, weak)
	db.CreateRole(t, able, "CREATEROLE")
	db.Exec(t, `GRANT pg_signal_backend, pg_read_all_stats TO `+able)
	detector := db.Conn(t, "postgres")
	for _, tc := range []struct {
		name      string
		responder string
		automatic bool
		failed    bool
		want      []string
	}{
		{"weak, by hand", weak, false, false, []string{
			"! responder " + weak + " terminate: cannot terminate another role's session",
			"fix: as a superuser: GRANT pg_signal_backend, pg_read_all_stats TO " + weak + ";",
			"! responder " + weak + " lock: no CREATEROLE",
		}},
		{"weak, automatic", weak, true, true, []string{"✗ responder " + weak + " terminate"}},
		{"able", able, true, false, []string{"✓ responder " + able + " terminate", "✓ responder " + able + " lock"}},
		{"superuser", "postgres", true, false, []string{"! responder postgres: is the detector's own role"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := doctor.Run(t.Context(), detector, doctor.Options{
				Tables: []config.SensitiveTable{mustTable(t, "public.missing")}, Responder: db.Conn(t, tc.responder), Automatic: tc.automatic,
			})
			if err != nil {
				t.Fatal(err)
			}
			out := written(t, rep)
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("report lacks %q", want)
				}
			}
			if got := strings.Contains(out, "✗ responder"); got != tc.failed {
				t.Errorf("a responder check failed: got %v, want %v", got, tc.failed)
			}
		})
	}
	rep, err := doctor.Run(t.Context(), detector, doctor.Options{Tables: []config.SensitiveTable{mustTable(t, "public.missing")}, Automatic: true})
	if err != nil {
		t.Fatal(err)
	}
	if out := written(t, rep); !strings.Contains(out, "✗ responder: response.automatic is on but response.dsn is not set") {
		t.Error("report lacks the missing response.dsn")
	}
}

// With high availability, doctor says whether the role may keep the target's state:
// a failure with the fix before setup made the schema, OK after.
func TestHighAvailabilityStateSchema(t *testing.T) {
	db := pgtest.NewDatabase(t)
	role := "doc_ha_" + db.Name[len(db.Name)-3:]
	db.CreateRole(t, role)
	db.Exec(t, `CREATE TABLE public.users (id int, email text); GRANT pg_monitor TO `+role)
	check := func() string {
		t.Helper()
		rep, err := doctor.Run(t.Context(), db.Conn(t, role), doctor.Options{
			Tables: []config.SensitiveTable{mustTable(t, "public.users")}, HighAvailability: true})
		if err != nil {
			t.Fatal(err)
		}
		return written(t, rep)
	}
	if out := check(); !strings.Contains(out, "✗ high availability state (schema pgtripwire): pgtripwire.rule_state does not exist") ||
		!strings.Contains(out, "fix: pgtripwire setup --config FILE --apply") {
		t.Errorf("before setup, report lacks the failure and its fix:\n%s", out)
	}
	for _, sql := range ha.SchemaSQL {
		db.Exec(t, sql)
	}
	if out := check(); !strings.Contains(out, "no SELECT, INSERT and UPDATE on pgtripwire.rule_state") {
		t.Errorf("without the grants, report lacks the missing rights:\n%s", out)
	}
	db.Exec(t, `GRANT USAGE ON SCHEMA pgtripwire TO `+role+`; GRANT SELECT ON pgtripwire.rule_state, pgtripwire.replay_guard TO `+role)
	if out := check(); !strings.Contains(out, "no SELECT, INSERT and UPDATE on pgtripwire.rule_state") {
		t.Errorf("with SELECT only, report lacks the missing rights:\n%s", out)
	}
	for _, sql := range ha.GrantSQL(role) {
		db.Exec(t, sql)
	}
	if out := check(); !strings.Contains(out, "✓ high availability state (schema pgtripwire)") {
		t.Errorf("after setup, report lacks the OK:\n%s", out)
	}
}
