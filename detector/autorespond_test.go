package detector_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

			// A dump in key order, 0.5 ms a row: five seconds for the whole table; and
			// the intruder's retry from a new session once the first is cut, while the
			// alert still fires (no new firing line: the episode goes on).
			for attempt := 1; attempt <= 2; attempt++ {
				n, firstCanary, end, err := dumpInKeyOrder(t, db.Conn(t, reader))
				t.Logf("attempt %d: %d rows; the read ended %v after the first canary row: %v",
					attempt, n, end.Sub(firstCanary).Round(time.Millisecond), err)
				want := map[string]string{"role": reader, response.LabelBy: response.ByAutomatic}
				switch mode {
				case config.ResponseOn:
					var pgErr *pgconn.PgError
					if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
						t.Fatalf("attempt %d: the read ended with %v after %d rows, want it terminated (57P01)", attempt, err, n)
					}
					if d := end.Sub(firstCanary); d > 3*time.Second {
						t.Errorf("attempt %d: terminated %v after the first canary row, want within 3s", attempt, d)
					}
					want[response.LabelOutcome] = response.OutcomeApplied
				case config.ResponseShadow:
					if err != nil || n < 9_800 {
						t.Fatalf("attempt %d: the read ended with %v after %d rows, want it to run to its end", attempt, err, n)
					}
					want[response.LabelOutcome] = response.OutcomeShadow
				}
				eventually(t, 5*time.Second, fmt.Sprintf("%d automatic response line(s)", attempt), func() bool {
					return len(responses(r.Lines(t), want)) >= attempt
				})
			}
			for _, line := range responses(r.Lines(t), map[string]string{"role": reader}) {
				if line.Labels[response.LabelActions] != "terminate" || !strings.Contains(line.Annotations[model.AnnotationSummary], "terminated 1 session") {
					t.Errorf("got %+v, want the termination of one session (or what would have been)", line)
				}
			}
			if _, err := app.Exec(t.Context(), `SELECT 1`); err != nil {
				t.Errorf("the application's session after the response: %v, want it untouched", err)
			}
			canary := r.WaitAlert(t, time.Second, "CanaryRowRead", map[string]string{"role": reader})
			firing := 0
			for _, a := range r.Lines(t) {
				if a.Rule == response.Rule && a.Labels[response.LabelResponseTo] != canary.Fingerprint {
					t.Errorf("got %+v, want a response to the canary alert %s only", a, canary.Fingerprint)
				}
				if a.Rule == "CanaryRowRead" && a.State == model.StateFiring {
					firing++
				}
			}
			if firing != 1 {
				t.Errorf("got %d CanaryRowRead firing lines, want 1: the retry continues the episode", firing)
			}
			// Each session visits three canary rows: one response per session.
			if got := responses(r.Lines(t), map[string]string{"role": reader}); len(got) != 2 {
				t.Errorf("got %d ResponseTaken lines, want 2 (one per reading session): %+v", len(got), got)
			}

			// The same read folded into one value: no row reaches the client until the
			// end, and the session is cut while it aggregates.
			folder := db.Name + "_folder"
			db.CreateRole(t, folder)
			db.Exec(t, fmt.Sprintf(`GRANT SELECT ON users TO %s`, folder))
			fconn := db.Conn(t, folder)
			if _, err := fconn.Exec(t.Context(), `SET enable_seqscan = off`); err != nil {
				t.Fatal(err)
			}
			var folded string
			err := fconn.QueryRow(context.Background(), `SELECT string_agg(email || ':' || password_hash, ',')
				FROM (SELECT email, password_hash, pg_sleep(0.0005) FROM users ORDER BY id) s`).Scan(&folded)
			var pgErr *pgconn.PgError
			want := map[string]string{"role": folder, response.LabelBy: response.ByAutomatic, response.LabelOutcome: response.OutcomeShadow}
			if mode == config.ResponseOn {
				if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
					t.Fatalf("the folded read ended with %v, want it terminated (57P01)", err)
				}
				want[response.LabelOutcome] = response.OutcomeApplied
			} else if err != nil || !strings.Contains(folded, "@canary.example") {
				t.Fatalf("the folded read ended with %v, want it to run to its end", err)
			}
			eventually(t, 5*time.Second, "the folded read's response", func() bool { return len(responses(r.Lines(t), want)) == 1 })
		})
	}
}

// dumpInKeyOrder reads every row of users in key order on conn, 0.5 ms a row, and
// returns how many rows it got, when the first canary row came (when it ended, for a
// read terminated before any reached the client), when it ended and why.
func dumpInKeyOrder(t *testing.T, conn *pgx.Conn) (n int, firstCanary, end time.Time, err error) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(context.Background(), `SELECT id, email, password_hash, pg_sleep(0.0005) FROM users ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
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
	end = time.Now()
	var pgErr *pgconn.PgError
	switch {
	case !firstCanary.IsZero():
	case errors.As(rows.Err(), &pgErr) && pgErr.Code == "57P01":
		// Cut before the first canary row reached the client: on PostgreSQL 17 and
		// later the canary function flushes its message at once, and the termination
		// can overtake the row still in the server's output buffer.
		firstCanary = end
	default:
		t.Fatalf("the read of %d rows got no canary row (%v)", n, rows.Err())
	}
	return n, firstCanary, end, rows.Err()
}

// responses are the firing ResponseTaken lines whose labels include labels.
func responses(lines []model.Alert, labels map[string]string) []model.Alert {
	var out []model.Alert
	for _, a := range lines {
		if a.Rule != response.Rule || a.State != model.StateFiring {
			continue
		}
		match := true
		for k, v := range labels {
			match = match && a.Labels[k] == v
		}
		if match {
			out = append(out, a)
		}
	}
	return out
}
