package detector_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/detector/setup"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// #10 acceptance 1 and 2, and #9's DDL events, through the whole daemon: the database is
// prepared by setup (publication, slot, DDL event trigger) and canary plant, the
// detector streams from the slot, and the default pack pages.
func TestCanaryReadsAndTamperingPage(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 20_000)
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
	// A view owned by an ordinary role: its reads are checked against that role, to whom
	// the policies apply (a superuser's view would bypass row level security).
	owner := db.Name + "_owner"
	db.CreateRole(t, owner)
	db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users TO %[1]s;
		CREATE VIEW public.user_export AS SELECT * FROM public.users;
		ALTER VIEW public.user_export OWNER TO %[1]s`, owner))

	r := detectortest.Start(t, cfg)

	reads := []struct{ name, sql string }{
		{"SELECT *", `SELECT * FROM users`},
		{"count(email)", `SELECT count(email) FROM users`},
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
		if err := db.Conn(t, marker).PgConn().Exec(context.Background(), `SELECT count(email) FROM users`).Close(); err != nil {
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
