// Package demo is `pgtripwire demo`: it starts a throwaway PostgreSQL from the local
// server binaries, seeds a users table, runs the detector against it with the default
// settings, plays an application's login lookups and then an intruder's bulk read, and
// shows the alert that pages on-call. Everything it starts is removed before it returns.
//
// It is not a test: it narrates for a person, and fails only when the alert does not come.
package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/alert"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/pgserver"
)

// Options tune the demo.
type Options struct {
	// Users is how many accounts to seed (default 100,000).
	Users int
	// Out receives the narration and the alert lines.
	Out io.Writer
	// Logger receives the detector's and the server's logs.
	Logger *zap.Logger
	// AlertTimeout bounds the wait for the alert (default 30 s).
	AlertTimeout time.Duration
}

// Run plays the demo and returns nil once the bulk read has been alerted.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Users <= 0 {
		opts.Users = 100_000
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.AlertTimeout <= 0 {
		opts.AlertTimeout = 30 * time.Second
	}
	// The narration and the detector's alert lines share the output.
	out := &syncWriter{w: opts.Out}
	say := func(format string, args ...any) { fmt.Fprintf(out, "demo: "+format+"\n", args...) }

	say("starting a throwaway PostgreSQL from the local server binaries")
	srv, err := pgserver.Start(ctx, pgserver.Options{Logger: opts.Logger.Named("postgres")})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := srv.Close(); cerr != nil && err == nil {
			err = cerr
		}
		say("removed the throwaway PostgreSQL")
	}()
	say("PostgreSQL %d on 127.0.0.1:%d", srv.Version(), srv.Port())

	if err := seed(ctx, srv, opts.Users); err != nil {
		return err
	}
	say("seeded public.users with %d accounts (email, username, password_hash)", opts.Users)

	work, err := os.MkdirTemp("", "pgtripwire-demo-")
	if err != nil {
		return fmt.Errorf("create demo directory: %w", err)
	}
	defer os.RemoveAll(work)

	cfg := config.Defaults()
	cfg.Database.DSN = srv.DSN("pgtripwire", "app")
	users, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
	if err != nil {
		return err
	}
	cfg.Sensitive = []config.SensitiveTable{users}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Alerts.File = filepath.Join(work, "alerts.jsonl")
	cfg.StateDir = filepath.Join(work, "state")

	d, err := detector.New(cfg, detector.Deps{Logger: opts.Logger, Registry: prometheus.NewRegistry(), Stdout: out})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		stop()
		if rerr := <-done; rerr != nil && err == nil {
			err = rerr
		}
	}()
	if err := waitReady(ctx, "http://"+d.Addr().String()+"/readyz", 30*time.Second); err != nil {
		return err
	}
	say("detector ready as role pgtripwire (pg_monitor, no table rights): default rules, /metrics on http://%s", d.Addr())

	if err := benign(ctx, srv); err != nil {
		return err
	}
	say("role app ran 500 login lookups (SELECT id, password_hash FROM users WHERE username = $1): no alert expected")

	say("role mallory runs SELECT email, username, password_hash FROM users")
	if err := exfiltrate(ctx, srv); err != nil {
		return err
	}

	line, err := waitFiring(ctx, cfg.Alerts.File, opts.AlertTimeout)
	if err != nil {
		return err
	}
	if line.Labels[alert.LabelRole] != "mallory" {
		return fmt.Errorf("the first alert is about role %q, want mallory: a false positive", line.Labels[alert.LabelRole])
	}
	say("paged: %s (value %.0f, role %s, columns %s) — the line above is what the alert log and on-call receive",
		line.Rule, line.Value, line.Labels[alert.LabelRole], line.Labels[alert.LabelColumns])
	return nil
}

func seed(ctx context.Context, srv *pgserver.Server, users int) error {
	if err := srv.CreateDatabase(ctx, "app"); err != nil {
		return err
	}
	steps := []struct {
		sql  string
		args []any
	}{
		{sql: `CREATE TABLE public.users (
			id bigserial PRIMARY KEY,
			email text NOT NULL UNIQUE,
			username text NOT NULL UNIQUE,
			password_hash text NOT NULL,
			created_at timestamptz NOT NULL DEFAULT now())`},
		{sql: `INSERT INTO public.users (email, username, password_hash)
			SELECT 'user' || i || '@example.com', 'user' || i,
			       '$2b$12$' || substr(md5(i::text) || md5((i * 7)::text), 1, 53)
			FROM generate_series(1, $1::int) AS i`, args: []any{users}},
		{sql: `DO $$ BEGIN
			CREATE ROLE app LOGIN;
			CREATE ROLE mallory LOGIN;
			CREATE ROLE pgtripwire LOGIN;
		EXCEPTION WHEN duplicate_object THEN NULL; END $$`},
		// The detector reads statistics, never the tables: pg_monitor is all it needs.
		{sql: `GRANT pg_monitor TO pgtripwire`},
		{sql: `GRANT SELECT ON public.users TO app, mallory`},
		{sql: `ANALYZE public.users`},
	}
	for _, step := range steps {
		if err := srv.Exec(ctx, "app", step.sql, step.args...); err != nil {
			return fmt.Errorf("seed demo database: %w", err)
		}
	}
	return nil
}

func benign(ctx context.Context, srv *pgserver.Server) error {
	conn, err := pgx.Connect(ctx, srv.DSN("app", "app"))
	if err != nil {
		return fmt.Errorf("connect as app: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for i := range 500 {
		var id int64
		var hash string
		err := conn.QueryRow(ctx, `SELECT id, password_hash FROM users WHERE username = $1`,
			fmt.Sprintf("user%d", i+1)).Scan(&id, &hash)
		if err != nil {
			return fmt.Errorf("login lookup: %w", err)
		}
	}
	return nil
}

func exfiltrate(ctx context.Context, srv *pgserver.Server) error {
	conn, err := pgx.Connect(ctx, srv.DSN("mallory", "app"))
	if err != nil {
		return fmt.Errorf("connect as mallory: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT email, username, password_hash FROM users`)
	if err != nil {
		return fmt.Errorf("bulk read: %w", err)
	}
	for rows.Next() {
		// The intruder's client receives every row; the demo discards them.
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("bulk read: %w", err)
	}
	return nil
}

func waitReady(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("detector not ready after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitFiring polls the alert log until a firing line appears.
func waitFiring(ctx context.Context, path string, timeout time.Duration) (alert.Alert, error) {
	deadline := time.Now().Add(timeout)
	for {
		if a, ok, err := firstFiring(path); err != nil {
			return alert.Alert{}, err
		} else if ok {
			return a, nil
		}
		if time.Now().After(deadline) {
			return alert.Alert{}, errors.New("no alert within " + timeout.String() + ": the bulk read was not detected")
		}
		select {
		case <-ctx.Done():
			return alert.Alert{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func firstFiring(path string) (alert.Alert, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return alert.Alert{}, false, fmt.Errorf("read alert log: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var a alert.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return alert.Alert{}, false, fmt.Errorf("alert log line is not JSON: %w", err)
		}
		if a.State == alert.StateFiring {
			return a, true, nil
		}
	}
	return alert.Alert{}, false, sc.Err()
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
