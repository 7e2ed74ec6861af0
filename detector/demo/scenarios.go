package demo

import (
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
)

// expectation says whether missing a scenario fails the demo.
type expectation int

const (
	// required: today's rules must page on the scenario.
	required expectation = iota
	// notYet: today's rules cannot catch the scenario by design. It is played and shown
	// so that the gap is visible, and does not fail the demo; the scenario's coveredBy
	// names what will catch it. When that lands, flip the scenario to required.
	notYet
)

func (e expectation) String() string {
	if e == notYet {
		return "not yet"
	}
	return "required"
}

// scenario is one way an intruder walks off with the users table. Each runs as a role of
// its own: alerts are grouped by role and table, so each raises (or misses) its own.
type scenario struct {
	name      string
	role      string
	shows     string // what the narration says the role runs
	expect    expectation
	coveredBy string // for notYet: the rules that will catch it
	// noTableRight: the role gets no SELECT on public.users (its setup grants what it
	// reads through).
	noTableRight bool
	// setup runs as the superuser before the detector starts, after the role exists.
	setup string
	// run plays the read on a connection of role; it returns once the client has
	// received every row.
	run func(ctx context.Context, conn *pgx.Conn) error
}

// breaches lists the scenarios in the order they are played.
func breaches() []scenario {
	simple := pgx.QueryExecModeSimpleProtocol
	return []scenario{
		{
			name:  "plain dump",
			role:  "intruder_dump",
			shows: "SELECT email, username, password_hash FROM users",
			run: func(ctx context.Context, conn *pgx.Conn) error {
				return drain(conn.Query(ctx, `SELECT email, username, password_hash FROM users`))
			},
		},
		{
			name:  "SELECT *",
			role:  "intruder_star",
			shows: "SELECT * FROM users",
			run: func(ctx context.Context, conn *pgx.Conn) error {
				return drain(conn.Query(ctx, `SELECT * FROM users`))
			},
		},
		{
			name:  "whole-row read",
			role:  "intruder_row",
			shows: "SELECT u FROM users u",
			run: func(ctx context.Context, conn *pgx.Conn) error {
				return drain(conn.Query(ctx, `SELECT u FROM users u`))
			},
		},
		{
			name:  "COPY TO STDOUT",
			role:  "intruder_copy",
			shows: "COPY (SELECT email, password_hash FROM users) TO STDOUT",
			run: func(ctx context.Context, conn *pgx.Conn) error {
				_, err := conn.PgConn().CopyTo(ctx, io.Discard, `COPY (SELECT email, password_hash FROM users) TO STDOUT`)
				return err
			},
		},
		{
			name:  "psql cursor (FETCH_COUNT=500)",
			role:  "intruder_cursor",
			shows: "DECLARE _psql_cursor NO SCROLL CURSOR FOR SELECT …, then FETCH FORWARD 500 until empty",
			// What psql does with \set FETCH_COUNT 500: each FETCH returns 500 rows, below
			// the per-statement threshold, unless they are counted as the DECLARE's rows.
			run: func(ctx context.Context, conn *pgx.Conn) error {
				tx, err := conn.Begin(ctx)
				if err != nil {
					return err
				}
				defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
				if _, err := tx.Exec(ctx, `DECLARE _psql_cursor NO SCROLL CURSOR FOR SELECT email, username, password_hash FROM users`, simple); err != nil {
					return err
				}
				for n := int64(-1); n != 0; {
					tag, err := tx.Exec(ctx, `FETCH FORWARD 500 FROM _psql_cursor`, simple)
					if err != nil {
						return err
					}
					n = tag.RowsAffected()
				}
				if _, err := tx.Exec(ctx, `CLOSE _psql_cursor`, simple); err != nil {
					return err
				}
				return tx.Commit(ctx)
			},
		},
		{
			name:  "view created by admin",
			role:  "intruder_view",
			shows: "SELECT * FROM reports.user_export (a view admin created over users)",
			// The role has no right on users at all: the view, owned by admin, reads
			// the table with admin's rights.
			noTableRight: true,
			setup: `SET ROLE admin;
				CREATE VIEW reports.user_export AS SELECT id, email, username, password_hash FROM public.users;
				GRANT USAGE ON SCHEMA reports TO intruder_view;
				GRANT SELECT ON reports.user_export TO intruder_view;
				RESET ROLE`,
			run: func(ctx context.Context, conn *pgx.Conn) error {
				return drain(conn.Query(ctx, `SELECT * FROM reports.user_export`))
			},
		},
		{
			name:  "search_path around a decoy",
			role:  "intruder_path",
			shows: "SET search_path = public; SELECT password_hash, username, email FROM users (a decoy intruder_path.users exists)",
			// The detector resolves names with search_path "$user", public, so it would
			// read this role's "users" as its own empty decoy; the session reads
			// public.users.
			setup: `CREATE SCHEMA intruder_path AUTHORIZATION intruder_path;
				CREATE TABLE intruder_path.users (id int, email text, username text, password_hash text);
				ALTER TABLE intruder_path.users OWNER TO intruder_path`,
			run: func(ctx context.Context, conn *pgx.Conn) error {
				if _, err := conn.Exec(ctx, `SET search_path = public`, simple); err != nil {
					return err
				}
				_, err := conn.Exec(ctx, `SELECT password_hash, username, email FROM users`, simple)
				return err
			},
		},
		{
			name:  "paginated sweep (500-row pages)",
			role:  "intruder_sweep",
			shows: "SELECT email, username, password_hash FROM users WHERE id > $1 ORDER BY id LIMIT 500, page after page",
			run: func(ctx context.Context, conn *pgx.Conn) error {
				for last := int64(0); ; {
					rows, err := conn.Query(ctx, `SELECT id, email, username, password_hash FROM users
						WHERE id > $1 ORDER BY id LIMIT 500`, last)
					if err != nil {
						return err
					}
					n := 0
					for rows.Next() {
						if err := rows.Scan(&last, nil, nil, nil); err != nil {
							rows.Close()
							return err
						}
						n++
					}
					if err := rows.Err(); err != nil {
						return err
					}
					if n == 0 {
						return nil
					}
				}
			},
		},
	}
}

// drain receives every row of a query, as an intruder's client does, and discards them.
func drain(rows pgx.Rows, err error) error {
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	return rows.Err()
}

// benignTraffic is what the application and its operators do all day. None of it may page.
type benignTraffic struct {
	logins   int // one-row lookups of a password hash by role app
	signups  int // INSERTs of new users by role app
	listings int // admin listings of the 50 newest users by role admin
}

const adminListingRows = 50

// play runs the benign traffic interleaved, as it would arrive.
func (b benignTraffic) play(ctx context.Context, app, admin *pgx.Conn, users int) error {
	signupEvery, listingEvery := max(b.logins/max(b.signups, 1), 1), max(b.logins/max(b.listings, 1), 1)
	signups, listings := 0, 0
	for i := range b.logins {
		var id int64
		var hash string
		err := app.QueryRow(ctx, `SELECT id, password_hash FROM users WHERE username = $1`,
			fmt.Sprintf("user%d", i*7919%users+1)).Scan(&id, &hash)
		if err != nil {
			return fmt.Errorf("login lookup: %w", err)
		}
		if i%signupEvery == 0 && signups < b.signups {
			signups++
			if _, err := app.Exec(ctx, `INSERT INTO users (email, username, password_hash) VALUES ($1, $2, $3)`,
				fmt.Sprintf("signup%d@example.com", signups), fmt.Sprintf("signup%d", signups),
				fmt.Sprintf("$2b$12$signup%047d", signups)); err != nil {
				return fmt.Errorf("signup: %w", err)
			}
		}
		if i%listingEvery == 0 && listings < b.listings {
			listings++
			if err := drain(admin.Query(ctx, `SELECT id, email, username FROM users ORDER BY created_at DESC LIMIT 50`)); err != nil {
				return fmt.Errorf("admin listing: %w", err)
			}
		}
	}
	return nil
}
