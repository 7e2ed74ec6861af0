package detector_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/response"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// #19 acceptance 3: with the automatic response on, a slow full read of a table with
// canary rows is terminated within 3 s of the first canary row it got; in shadow mode
// the same read runs to its end and a line says what would have been done.
func TestCanaryReadIsTerminatedAutomatically(t *testing.T) {
	for _, mode := range []config.ResponseMode{config.ResponseOn, config.ResponseShadow} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDatabase(t)
			seedUsers(t, db, 10_000)
			// Gaps in the keys, so that the canaries are spread through the key order
			// rather than after every real row.
			db.Exec(t, `DELETE FROM users WHERE id % 97 = 0`)
			responder, reader := db.Name+"_responder", db.Name+"_reader"
			db.CreateRole(t, responder)
			db.Exec(t, fmt.Sprintf(`GRANT pg_signal_backend, pg_read_all_stats TO %s`, responder))
			db.CreateRole(t, reader)
			db.Exec(t, fmt.Sprintf(`GRANT SELECT ON users TO %s`, reader))
			r := startWithCanaries(t, db, func(cfg *config.Config) {
				cfg.Response.DSN = db.DSN(responder)
				cfg.Response.Automatic = mode
			})

			// What visits canary rows without returning them never sets the response off:
			// a dashboard's count(*), a listing without sensitive columns, lookups.
			app := db.Conn(t, "app")
			for _, q := range []string{`SELECT count(*) FROM users`, `SELECT id, username FROM users ORDER BY id DESC LIMIT 50`,
				`SELECT password_hash FROM users WHERE username = 'user5'`, `SELECT count(*) FROM users WHERE lower(email) LIKE '%canary%'`} {
				if _, err := app.Exec(t.Context(), q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}

			// A dump in key order, 0.5 ms a row: five seconds for the whole table.
			conn := db.Conn(t, reader)
			if _, err := conn.Exec(t.Context(), `SET enable_seqscan = off`); err != nil {
				t.Fatal(err)
			}
			rows, err := conn.Query(context.Background(),
				`SELECT id, email, password_hash, pg_sleep(0.0005) FROM users ORDER BY id`)
			if err != nil {
				t.Fatal(err)
			}
			var firstCanary time.Time
			n := 0
			for rows.Next() {
				var id int64
				var email, hash string
				if err := rows.Scan(&id, &email, &hash, nil); err != nil {
					t.Fatal(err)
				}
				n++
				if firstCanary.IsZero() && strings.HasSuffix(email, "@canary.example") {
					firstCanary = time.Now()
				}
			}
			err = rows.Err()
			end := time.Now()
			if firstCanary.IsZero() {
				t.Fatalf("the read of %d rows got no canary row (%v)", n, err)
			}
			t.Logf("%d rows; the read ended %v after the first canary row: %v", n, end.Sub(firstCanary).Round(time.Millisecond), err)

			switch mode {
			case config.ResponseOn:
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
					t.Fatalf("the read ended with %v after %d rows, want it terminated (57P01)", err, n)
				}
				if d := end.Sub(firstCanary); d > 3*time.Second {
					t.Errorf("terminated %v after the first canary row, want within 3s", d)
				}
				line := r.WaitAlert(t, 5*time.Second, response.Rule, map[string]string{"role": reader, response.LabelBy: response.ByAutomatic})
				if line.Labels[response.LabelOutcome] != response.OutcomeApplied || line.Labels[response.LabelActions] != "terminate" ||
					!strings.Contains(line.Annotations[model.AnnotationSummary], "terminated 1 session") {
					t.Errorf("got %+v, want the termination of one session, applied", line)
				}
			case config.ResponseShadow:
				if err != nil || n < 9_800 {
					t.Fatalf("the read ended with %v after %d rows, want it to run to its end", err, n)
				}
				line := r.WaitAlert(t, 5*time.Second, response.Rule, map[string]string{"role": reader, response.LabelBy: response.ByAutomatic})
				if line.Labels[response.LabelOutcome] != response.OutcomeShadow ||
					!strings.Contains(line.Annotations[model.AnnotationSummary], "would have terminated 1 session") {
					t.Errorf("got %+v, want what would have been done", line)
				}
			}
			if _, err := app.Exec(t.Context(), `SELECT 1`); err != nil {
				t.Errorf("the application's session after the response: %v, want it untouched", err)
			}
			canary := r.WaitAlert(t, time.Second, "CanaryRowRead", map[string]string{"role": reader})
			for _, a := range r.Lines(t) {
				if a.Rule == response.Rule && a.Labels[response.LabelResponseTo] != canary.Fingerprint {
					t.Errorf("got %+v, want a response to the canary alert %s only", a, canary.Fingerprint)
				}
			}
		})
	}
}
