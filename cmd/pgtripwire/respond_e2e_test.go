package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/response"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

// #19 acceptance 2, from the page to the response: a running detector pages a slow
// dump and captures its evidence; `respond FP --terminate --lock-role` prints the SQL
// and changes nothing; with --apply the dump's client gets an error, the role can no
// longer log in, and a ResponseTaken line in the detector's alert log names both.
func TestRespondStopsADumpTheDetectorPaged(t *testing.T) {
	db := pgtest.NewDatabase(t)
	intruder, responder := db.Name+"_intruder", db.Name+"_responder"
	db.CreateRole(t, intruder)
	db.CreateRole(t, responder, "CREATEROLE")
	db.Exec(t, fmt.Sprintf(`CREATE TABLE public.users (id bigserial PRIMARY KEY, email text NOT NULL, username text NOT NULL, password_hash text NOT NULL);
		INSERT INTO public.users (email, username, password_hash)
			SELECT 'user' || i || '@example.com', 'user' || i, '$2b$12$' || md5(i::text) FROM generate_series(1, 5000) i;
		INSERT INTO public.users (email, username, password_hash) VALUES ('%[3]s', 'seeded', 'seeded-hash');
		GRANT SELECT ON public.users TO %[1]s;
		GRANT pg_signal_backend, pg_read_all_stats TO %[2]s`, intruder, responder, respondSecret))
	if db.Server.Version() >= 16 {
		// 16+: CREATEROLE alters only the roles the responder has ADMIN OPTION on.
		db.Exec(t, fmt.Sprintf(`GRANT %s TO %s WITH ADMIN OPTION, INHERIT FALSE, SET FALSE`, intruder, responder))
	}

	cfg := detectortest.Config(t, db)
	r := detectortest.Start(t, cfg)
	path := filepath.Join(t.TempDir(), "pgtripwire.yaml")
	if err := os.WriteFile(path, fmt.Appendf(nil, `database: {dsn: %q}
sensitive: [{table: public.users, columns: [email, username, password_hash]}]
alerts: {file: %q}
state_dir: %q
response: {dsn: %q}
`, cfg.Database.DSN, cfg.Alerts.File, cfg.StateDir, db.DSN(responder)), 0o600); err != nil {
		t.Fatal(err)
	}

	// The intruder's dump, slowed to 10 ms a row: nearly a minute unless stopped.
	conn, err := pgx.Connect(t.Context(), db.DSN(intruder))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	pid := conn.PgConn().PID()
	dumpDone := make(chan error, 1)
	go func() {
		rows, err := conn.Query(context.Background(), `SELECT email, password_hash, pg_sleep(0.01) FROM users`)
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
		}
		dumpDone <- err
	}()
	alert := r.WaitAlert(t, 15*time.Second, "SensitiveReadInProgress", map[string]string{"role": intruder})
	if alert.Annotations[detector.AnnotationEvidenceURL] == "" {
		t.Errorf("the firing line has no evidence_url: %+v", alert)
	}
	store := detector.EvidenceStore(cfg)
	sourcetest.Eventually(t, 10*time.Second, "the alert's evidence", func() bool {
		_, err := store.Load(alert.Fingerprint)
		return err == nil
	})
	linesBefore := len(r.Lines(t))

	code, dry, stderr := runCLI(t, "respond", alert.Fingerprint, "--config", path, "--terminate", "--lock-role")
	if code != exitOK {
		t.Fatalf("dry run: exit %d: %s", code, stderr)
	}
	for _, want := range []string{fmt.Sprintf("WHERE pid = %d AND backend_start = ", pid), fmt.Sprintf(`ALTER ROLE %q NOLOGIN`, intruder)} {
		if !strings.Contains(dry, want) {
			t.Errorf("the dry run does not print %q:\n%s", want, dry)
		}
	}
	select {
	case err := <-dumpDone:
		t.Fatalf("the dump ended during the dry run: %v", err)
	default:
	}
	if c, err := pgx.Connect(t.Context(), db.DSN(intruder)); err != nil {
		t.Fatalf("after the dry run the intruder cannot log in: %v", err)
	} else {
		_ = c.Close(t.Context())
	}
	if n := len(r.Lines(t)); n != linesBefore {
		t.Errorf("the dry run wrote %d alert line(s)", n-linesBefore)
	}

	code, applied, stderr := runCLI(t, "respond", alert.Fingerprint, "--config", path, "--terminate", "--lock-role", "--apply")
	if code != exitOK {
		t.Fatalf("--apply: exit %d\n%s\n%s", code, applied, stderr)
	}
	select {
	case err := <-dumpDone:
		if pgCode(err) != "57P01" {
			t.Errorf("the dump ended with %v, want it terminated (57P01)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dump still runs 10 s after --apply")
	}
	if _, err := pgx.Connect(t.Context(), db.DSN(intruder)); pgCode(err) != "28000" {
		t.Errorf("the intruder logging in after --apply: got %v, want 28000 (not permitted to log in)", err)
	}
	var taken []model.Alert
	for _, a := range r.Lines(t) {
		if a.Rule == response.Rule {
			taken = append(taken, a)
		}
	}
	if len(taken) != 2 || taken[0].Labels[response.LabelResponseTo] != alert.Fingerprint ||
		taken[0].Labels[response.LabelActions] != "terminate,lock_role" || taken[0].Labels[response.LabelOutcome] != response.OutcomeApplied ||
		!strings.Contains(taken[0].Annotations[model.AnnotationSummary], fmt.Sprintf("terminated 1 session (pid %d), locked role %s", pid, intruder)) {
		t.Errorf("got ResponseTaken lines %+v, want a firing and a resolved line naming both actions", taken)
	}
	if e, err := store.Load(alert.Fingerprint); err != nil || !strings.Contains(fmt.Sprint(e.Sessions), fmt.Sprint(pid)) {
		t.Errorf("evidence: %v %+v, want the dump's session", err, e)
	}
	logged, err := os.ReadFile(cfg.Alerts.File)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{dry, applied, stderr, string(logged)} {
		if strings.Contains(out, respondSecret) || strings.Contains(out, "@example.com") {
			t.Errorf("a value of the table was printed or recorded:\n%s", out)
		}
	}
}
