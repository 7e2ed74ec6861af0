// Package workload plays the traffic of an application's users table for end-to-end
// tests: the schema (Users), the benign traffic a detector must stay silent on (Benign),
// and helpers to run an intruder's statements as a role of its own.
//
// It is a test kit: production code never imports it.
package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// Users creates public.users as an application has it — a primary key, unique email and
// username, a password hash, a creation time spread over the past year — with n rows,
// and ANALYZEs it.
func Users(t testing.TB, db *pgtest.Database, n int) {
	t.Helper()
	db.Exec(t, `CREATE TABLE public.users (
		id bigserial PRIMARY KEY,
		email text NOT NULL UNIQUE,
		username text NOT NULL UNIQUE,
		password_hash text NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now())`)
	db.Exec(t, `INSERT INTO public.users (email, username, password_hash, created_at)
		SELECT 'user' || i || '@example.com', 'user' || i, '$2b$12$' || md5(i::text) || md5((i * 7)::text),
		       now() - make_interval(mins => ($1::int - i) * 3)
		FROM generate_series(1, $1::int) AS i`, n)
	db.Exec(t, `ANALYZE public.users`)
}

// Reader creates role (LOGIN) with SELECT on public.users and returns a connection as it.
func Reader(t testing.TB, db *pgtest.Database, role string) *pgx.Conn {
	t.Helper()
	db.CreateRole(t, role)
	db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users TO %s`, pgx.Identifier{role}.Sanitize()))
	return db.Conn(t, role)
}

// Drain runs sql as conn and reads every row, failing the test on error. It returns the
// rows read.
func Drain(t testing.TB, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	n := 0
	for rows.Next() {
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// BenignRoles are the roles Benign plays: none may ever be named by an alert.
var BenignRoles = []string{"app", "admin", "dashboard"}

// Benign plays, until the test ends, the traffic a detector must stay silent on
// (issue #15): the application ("app") logs users in by their unique email at about
// 200 a second, signs new users up and resets passwords one by one; an administrator
// ("admin") browses the user list 50 per page, a page every 15 seconds; a dashboard
// ("dashboard") counts the users every 5 seconds. Every statement is one the
// detector sees in pg_stat_statements. users is the table's row count (the first ids).
// It creates the roles. The test fails if a statement fails.
func Benign(t testing.TB, db *pgtest.Database, users int) {
	t.Helper()
	db.CreateRole(t, "app")
	db.Exec(t, `GRANT SELECT, INSERT, UPDATE ON public.users TO app; GRANT USAGE ON SEQUENCE public.users_id_seq TO app`)
	db.CreateRole(t, "admin")
	db.Exec(t, `GRANT SELECT ON public.users TO admin`)
	db.CreateRole(t, "dashboard")
	db.Exec(t, `GRANT SELECT ON public.users TO dashboard`)
	app, admin, dashboard := db.Conn(t, "app"), db.Conn(t, "admin"), db.Conn(t, "dashboard")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failure error
	fail := func(err error) {
		if err == nil || ctx.Err() != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if failure == nil {
			failure = err
		}
	}
	every := func(interval time.Duration, f func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				fail(f(i))
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	// The application: each tick, 10 logins (200 a second), a signup every second, a
	// password reset every second. One connection: the statements run in turn.
	every(50*time.Millisecond, func(i int) error {
		for range 10 {
			var id int64
			var hash string
			email := fmt.Sprintf("user%d@example.com", 1+rng.IntN(users))
			if err := app.QueryRow(ctx, `SELECT id, password_hash FROM users WHERE email = $1`, email).Scan(&id, &hash); err != nil {
				return fmt.Errorf("login: %w", err)
			}
		}
		if i%20 == 0 {
			n := fmt.Sprintf("signup%d_%d", i, rng.Int())
			if _, err := app.Exec(ctx, `INSERT INTO users (email, username, password_hash) VALUES ($1, $2, $3) RETURNING id`,
				n+"@example.com", n, "$2b$12$signup"); err != nil {
				return fmt.Errorf("signup: %w", err)
			}
		}
		if i%20 == 10 {
			if _, err := app.Exec(ctx, `UPDATE users SET password_hash = $1 WHERE id = $2`,
				"$2b$12$reset"+fmt.Sprint(i), 1+rng.IntN(users)); err != nil {
				return fmt.Errorf("reset: %w", err)
			}
		}
		return nil
	})
	every(15*time.Second, func(i int) error {
		_, err := admin.Exec(ctx, `SELECT id, email, username FROM users ORDER BY created_at DESC LIMIT 50 OFFSET $1`, (i%10)*50)
		return err
	})
	every(5*time.Second, func(int) error {
		var n int64
		return dashboard.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n)
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if failure != nil && !errors.Is(failure, context.Canceled) {
			t.Errorf("benign traffic: %v", failure)
		}
	})
}
