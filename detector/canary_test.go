package detector_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/setup"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// startWithCanaries prepares db as an operator would — setup (publication, slot, DDL
// event trigger) and canary plant in public.users — and starts a detector streaming
// from the slot with the default pack; configure changes the detector's configuration
// first.
func startWithCanaries(t *testing.T, db *pgtest.Database, configure ...func(*config.Config)) *detectortest.Detector {
	t.Helper()
	ctx := t.Context()
	slot := db.Name
	if len(slot) > 63 {
		slot = slot[:63]
	}
	cfg := detectortest.Config(t, db)
	w := wal.SettingsOf(cfg.Sources)
	w.Enabled, w.Slot, w.Publication = wal.On, slot, slot
	super := db.Conn(t, "postgres")
	steps, err := setup.Plan(setup.Options{Role: db.Name + "_det", Tables: cfg.Sensitive, Publication: slot, Slot: slot, WAL: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Apply(ctx, super, steps); err != nil {
		t.Fatalf("setup --apply: %v", err)
	}
	if _, err := canary.Plant(ctx, super, canary.Options{Table: "public.users", Count: 3, Domain: "canary.example"}); err != nil {
		t.Fatalf("canary plant: %v", err)
	}
	for _, c := range configure {
		c(cfg)
	}
	return detectortest.Start(t, cfg)
}

// #10 acceptance 1 and 2, and #9's DDL events, through the whole daemon: the database is
// prepared by setup (publication, slot, DDL event trigger) and canary plant, the
// detector streams from the slot, and the default pack pages.
func TestCanaryReadsAndTamperingPage(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 20_000)
	ctx := t.Context()
	// A view owned by an ordinary role: its reads are checked against that role, to whom
	// the policies apply (a superuser's view would bypass row level security).
	owner := db.Name + "_owner"
	db.CreateRole(t, owner)
	db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users TO %[1]s;
		CREATE VIEW public.user_export AS SELECT * FROM public.users;
		ALTER VIEW public.user_export OWNER TO %[1]s`, owner))

	r := startWithCanaries(t, db)

	reads := []struct{ name, sql string }{
		{"SELECT *", `SELECT * FROM users`},
		{"COPY", `COPY users TO STDOUT`},
		{"view", `SELECT * FROM user_export`},
		{"cursor", `BEGIN; DECLARE c CURSOR FOR SELECT * FROM users; FETCH ALL FROM c; COMMIT`},
	}
	for i, rd := range reads {
		t.Run(rd.name, func(t *testing.T) {
			role := fmt.Sprintf("%s_r%d", db.Name, i)
			db.CreateRole(t, role)
			db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users, public.user_export TO %s`, role))
			conn := db.Conn(t, role)
			start := time.Now()
			if rd.name == "COPY" {
				if _, err := conn.PgConn().CopyTo(ctx, io.Discard, rd.sql); err != nil {
					t.Fatal(err)
				}
			} else if err := conn.PgConn().Exec(ctx, rd.sql).Close(); err != nil {
				t.Fatal(err)
			}
			got := r.WaitAlert(t, 3*time.Second, "CanaryRowRead", map[string]string{"role": role, "table": "public.users"})
			t.Logf("paged %v after the read", time.Since(start).Round(time.Millisecond))
			if got.Severity != model.SeverityCritical {
				t.Errorf("got %+v, want critical", got)
			}
		})
	}

	t.Run("ordinary queries stay silent", func(t *testing.T) {
		app := db.Conn(t, "app")
		for i := 1; i <= 50; i++ {
			var hash string
			if err := app.QueryRow(ctx, `SELECT password_hash FROM users WHERE username = $1`, fmt.Sprintf("user%d", i)).Scan(&hash); err != nil {
				t.Fatal(err)
			}
			if err := app.QueryRow(ctx, `SELECT email FROM users WHERE id = $1`, i).Scan(&hash); err != nil {
				t.Fatal(err)
			}
		}
		// A marker read after the lookups: once its page is in, the lookups' messages
		// (had there been any) are too, since messages arrive in WAL order.
		marker := db.Name + "_marker"
		db.CreateRole(t, marker)
		db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users TO %s`, marker))
		if err := db.Conn(t, marker).PgConn().Exec(context.Background(), `SELECT email FROM users`).Close(); err != nil {
			t.Fatal(err)
		}
		r.WaitAlert(t, 3*time.Second, "CanaryRowRead", map[string]string{"role": marker})
		for _, a := range r.Lines(t) {
			if a.Rule == "CanaryRowRead" && a.Labels["role"] == "app" {
				t.Errorf("got %+v for the application's lookups, want none", a)
			}
		}
	})

	t.Run("row level security disabled", func(t *testing.T) {
		start := time.Now()
		db.Exec(t, `ALTER TABLE public.users DISABLE ROW LEVEL SECURITY`)
		got := r.WaitAlert(t, 5*time.Second, "CanaryTampered", map[string]string{"table": "public.users", "object": "row_security"})
		t.Logf("paged %v after the ALTER", time.Since(start).Round(time.Millisecond))
		if got.Severity != model.SeverityCritical {
			t.Errorf("got %+v, want critical", got)
		}
		r.WaitAlert(t, 5*time.Second, "SecurityDDL", map[string]string{"kind": "rls_disabled"})
	})
}

// #15 acceptance 2, through the whole daemon with the WAL source: statements that pass
// over every row of the table without returning a sensitive value — a dashboard's
// count(*), a listing sorted by an unindexed column, a lookup by lower(email) — visit
// the canaries and page nobody (CanaryRowVisited, info); a full read of the credential
// columns, COPY, a cursor's FETCH and a folded aggregate page CanaryRowRead as before.
func TestCanaryPagesOnlyReadsOfSensitiveValues(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 20_000)
	db.Exec(t, `ALTER TABLE public.users ADD COLUMN last_seen timestamptz;
		UPDATE public.users SET last_seen = now() - id * interval '1 minute';
		CREATE INDEX ON public.users (lower(email))`)
	ctx := t.Context()
	r := startWithCanaries(t, db)

	// Each statement runs as its own role, so that each verdict is its own alert.
	as := func(t *testing.T, name string) *pgconn.PgConn {
		role := db.Name + "_" + name
		db.CreateRole(t, role)
		db.Exec(t, `GRANT SELECT ON public.users TO `+role)
		return db.Conn(t, role).PgConn()
	}
	exec := func(t *testing.T, conn *pgconn.PgConn, sqls ...string) {
		t.Helper()
		for _, sql := range sqls { // one at a time: each is the statement that visits
			if strings.HasPrefix(sql, "COPY") {
				if _, err := conn.CopyTo(ctx, io.Discard, sql); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if err := conn.Exec(ctx, sql).Close(); err != nil {
				t.Fatal(err)
			}
		}
	}

	visits := []struct{ name, sql string }{
		{"count", `SELECT count(*) FROM users`},
		{"listing", `SELECT id, last_seen FROM users ORDER BY last_seen DESC LIMIT 20`},
		{"lower", `SELECT id FROM users WHERE lower(email) = lower('User77@Example.com')`},
	}
	for _, v := range visits {
		t.Run("visit/"+v.name, func(t *testing.T) {
			exec(t, as(t, v.name), v.sql)
			role := db.Name + "_" + v.name
			got := r.WaitAlert(t, 10*time.Second, "CanaryRowVisited", map[string]string{"role": role, "table": "public.users"})
			if got.Severity != model.SeverityInfo || !strings.Contains(got.Annotations["summary"], "only visited, not returned") {
				t.Errorf("got %+v, want an info alert saying the canary was only visited", got)
			}
		})
	}

	reads := []struct {
		name    string
		sqls    []string
		columns string // "" when the statement cannot be classified
	}{
		{"full", []string{`SELECT email, username, password_hash FROM users`}, "email,password_hash,username"},
		{"copy", []string{`COPY users TO STDOUT`}, "email,password_hash,username"},
		{"fetch", []string{`BEGIN`, `DECLARE c CURSOR FOR SELECT email, password_hash FROM users`, `FETCH ALL FROM c`, `COMMIT`}, ""},
		{"folded", []string{`SELECT string_agg(email, ',') FROM users`}, "email"},
	}
	for _, rd := range reads {
		t.Run("read/"+rd.name, func(t *testing.T) {
			start := time.Now()
			exec(t, as(t, rd.name), rd.sqls...)
			role := db.Name + "_" + rd.name
			got := r.WaitAlert(t, 10*time.Second, "CanaryRowRead", map[string]string{"role": role, "table": "public.users"})
			t.Logf("paged %v after the read: %s", time.Since(start).Round(time.Millisecond), got.Annotations["summary"])
			want := "returned (" + rd.columns + ")"
			if rd.columns == "" {
				want = "visited by a statement pgtripwire could not classify"
			}
			if got.Severity != model.SeverityCritical || got.Labels["columns"] != rd.columns ||
				!strings.Contains(got.Annotations["summary"], want) {
				t.Errorf("got %+v, want a critical CanaryRowRead with columns %q saying %q", got, rd.columns, want)
			}
		})
	}

	// The visits were evaluated before the reads (each waited for its alert); nothing
	// but the info record may name their roles.
	for _, a := range r.Lines(t) {
		for _, v := range visits {
			if a.Labels["role"] == db.Name+"_"+v.name && a.Severity != model.SeverityInfo {
				t.Errorf("the %s visit paged: %+v", v.name, a)
			}
		}
	}

	// A function planted by the previous version reports no statement: its visits
	// page as they did, unclassified.
	t.Run("previous version", func(t *testing.T) {
		db.Exec(t, `DO $$DECLARE d text := pg_get_functiondef('pgtripwire_canary.tripped(regclass,text)'::regprocedure);
			BEGIN EXECUTE regexp_replace(d, ',\s*''statement''.*pg_trigger_depth\(\)', ''); END$$`)
		exec(t, as(t, "old"), `SELECT count(*) FROM users`)
		got := r.WaitAlert(t, 10*time.Second, "CanaryRowRead", map[string]string{"role": db.Name + "_old"})
		if !strings.Contains(got.Annotations["summary"], "could not classify") {
			t.Errorf("got %+v, want a page for a statement pgtripwire could not classify", got)
		}
	})
}
