// Package demo is `pgtripwire demo`: it starts a throwaway PostgreSQL from the local
// server binaries, seeds a users table, runs the detector against it with the default
// settings, plays benign traffic (logins, signups, an admin listing) and then the breach
// in each of its variants, prints the alerts as they fire, and closes with a table of
// what was detected and how fast. Everything it starts is removed before it returns.
//
// It is not a test: it narrates for a person. It fails when a scenario today's rules
// must catch was missed or when anything benign alerted; scenarios marked notYet are
// shown but cannot fail it.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/setup"
	"github.com/pgtripwire/pgtripwire/internal/pgserver"
	"github.com/pgtripwire/pgtripwire/model"
)

// Options tune the demo.
type Options struct {
	// Users is how many accounts to seed (default 100,000).
	Users int
	// Out receives the narration, the alerts as they fire and the closing table.
	Out io.Writer
	// Logger receives the detector's and the server's logs.
	Logger *zap.Logger
	// AlertTimeout bounds the wait for the detector's verdict on each phase (default 15 s).
	AlertTimeout time.Duration
	// Keep leaves PostgreSQL and the detector running after the report, until ctx ends.
	Keep bool
}

// seedBatch is how many users one INSERT seeds; a progress line follows each batch.
const seedBatch = 10_000

// benign is the traffic that must not page.
var benign = benignTraffic{logins: 300, signups: 30, listings: 10}

// Run plays the demo: benign traffic, then every breach scenario, each waiting for the
// detector's verdict, then the closing table. It returns the report, and an error when
// a required scenario was missed or anything else alerted (Report.Err), or when the demo
// itself could not run (the report is nil then). With Keep it returns only once ctx ends;
// a cancelled ctx is then the expected way out, not an error. Everything it started is
// removed before it returns.
func Run(ctx context.Context, opts Options) (_ *Report, err error) {
	if opts.Users <= 0 {
		opts.Users = 100_000
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.AlertTimeout <= 0 {
		opts.AlertTimeout = 15 * time.Second
	}
	// The narration and the detector's alert lines share the output.
	out := &syncWriter{w: opts.Out}
	say := func(format string, args ...any) { fmt.Fprintf(out, "demo: "+format+"\n", args...) }
	scenarios := breaches()

	say("starting a throwaway PostgreSQL from the local server binaries")
	srv, err := pgserver.Start(ctx, pgserver.Options{Logger: opts.Logger.Named("postgres")})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := srv.Close(); cerr != nil && err == nil {
			err = cerr
		}
		say("removed the throwaway PostgreSQL")
	}()
	say("PostgreSQL %d on 127.0.0.1:%d", srv.Version(), srv.Port())

	if err := seed(ctx, srv, opts.Users, scenarios, say); err != nil {
		return nil, err
	}

	work, err := os.MkdirTemp("", "pgtripwire-demo-")
	if err != nil {
		return nil, fmt.Errorf("create demo directory: %w", err)
	}
	defer os.RemoveAll(work)

	cfg := config.Defaults()
	cfg.Database.DSN = srv.DSN("pgtripwire", demoDatabase)
	users, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
	if err != nil {
		return nil, err
	}
	cfg.Sensitive = []config.SensitiveTable{users}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Alerts.File = filepath.Join(work, "alerts.jsonl")
	cfg.StateDir = filepath.Join(work, "state")

	registry := prometheus.NewRegistry()
	d, err := detector.New(cfg, detector.Deps{Logger: opts.Logger, Registry: registry, Stdout: &alertPrinter{out: out}})
	if err != nil {
		return nil, err
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
	metricsURL := "http://" + d.Addr().String() + "/metrics"
	if err := waitReady(ctx, "http://"+d.Addr().String()+"/readyz", 30*time.Second); err != nil {
		return nil, err
	}
	say("detector ready as role pgtripwire (statistics views and the WAL, no table rights), default rules, metrics on %s", metricsURL)
	say("alerts are written as JSON lines to %s (removed when the demo ends)", cfg.Alerts.File)
	w := &watch{alertLog: cfg.Alerts.File, registry: registry}

	if err := playBenign(ctx, srv, opts.Users); err != nil {
		return nil, err
	}
	say("benign traffic: app ran %d logins (SELECT id, password_hash FROM users WHERE username = $1) and %d signups,",
		benign.logins, benign.signups)
	say("  admin listed the %d newest users %d times (SELECT id, email, username FROM users ORDER BY created_at DESC LIMIT 50)",
		adminListingRows, benign.listings)
	err = w.judged(ctx, map[string]float64{
		"app":   float64(benign.logins),
		"admin": float64(benign.listings * adminListingRows),
	}, opts.AlertTimeout)
	if errors.Is(err, errDeadline) {
		return nil, fmt.Errorf("the detector did not count the benign traffic's reads within %s", opts.AlertTimeout)
	} else if err != nil {
		return nil, err
	}
	firing, err := w.firing()
	if err != nil {
		return nil, err
	}
	say("benign traffic judged by the detector: %d alert(s), want 0", len(firing))

	rep := &Report{AlertLog: cfg.Alerts.File}
	for i, sc := range scenarios {
		say("breach %d/%d, %s: role %s runs %s", i+1, len(scenarios), sc.name, sc.role, sc.shows)
		res, err := playBreach(ctx, srv, w, sc, opts)
		if err != nil {
			return nil, err
		}
		switch {
		case res.Detected:
			say("  detected %s after the read", res.TimeToDetect.Round(10*time.Millisecond))
		case !res.Required:
			say("  not detected, as expected today: %s will cover it", res.CoveredBy)
		default:
			say("  NOT DETECTED")
		}
		rep.Results = append(rep.Results, res)
	}

	if firing, err = w.firing(); err != nil {
		return nil, err
	}
	intruders := map[string]bool{}
	for _, sc := range scenarios {
		intruders[sc.role] = true
	}
	for _, a := range firing {
		if !intruders[a.Labels[model.LabelRole]] {
			rep.FalseAlerts = append(rep.FalseAlerts, a)
		}
	}
	fmt.Fprintln(out)
	rep.print(out)

	if opts.Keep {
		dsn := srv.SuperuserDSN(demoDatabase)
		say("--keep: PostgreSQL and the detector keep running until Ctrl-C")
		say("  metrics    %s", metricsURL)
		say("  database   %s (trust authentication: no password)", dsn)
		say("  alert log  %s", rep.AlertLog)
		say("  try        psql '%s' -c 'SELECT email, password_hash FROM users'", dsn)
		<-ctx.Done()
		say("stopping")
	}
	return rep, rep.Err()
}

// demoDatabase is the database the demo seeds and watches.
const demoDatabase = "app"

// seed creates the users table with users accounts, the application's, the admin's and
// the detector's roles, and every scenario's role and setup.
func seed(ctx context.Context, srv *pgserver.Server, users int, scenarios []scenario, say func(string, ...any)) error {
	if err := srv.CreateDatabase(ctx, demoDatabase); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, srv.SuperuserDSN(demoDatabase))
	if err != nil {
		return fmt.Errorf("seed demo database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	exec := func(sql string, args ...any) error {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("seed demo database: %w", err)
		}
		return nil
	}

	if err := exec(`CREATE TABLE public.users (
		id bigserial PRIMARY KEY,
		email text NOT NULL UNIQUE,
		username text NOT NULL UNIQUE,
		password_hash text NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	for from := 1; from <= users; from += seedBatch {
		to := min(from+seedBatch-1, users)
		if err := exec(`INSERT INTO public.users (email, username, password_hash, created_at)
			SELECT 'user' || i || '@example.com', 'user' || i,
			       '$2b$12$' || substr(md5(i::text) || md5((i * 7)::text), 1, 53),
			       now() - make_interval(mins => $2::int - i)
			FROM generate_series($1::int, $2::int) AS i`, from, to); err != nil {
			return err
		}
		say("seeding public.users: %s of %s accounts (%d%%)", thousands(int64(to)), thousands(int64(users)), to*100/users)
	}

	roles := []string{"app", "admin"}
	for _, sc := range scenarios {
		roles = append(roles, sc.role)
	}
	for _, role := range roles {
		if err := exec(`CREATE ROLE ` + pgx.Identifier{role}.Sanitize() + ` LOGIN`); err != nil {
			return err
		}
	}
	steps := []string{
		`GRANT SELECT, INSERT ON public.users TO app`,
		`GRANT USAGE ON SEQUENCE public.users_id_seq TO app`,
		`GRANT SELECT ON public.users TO admin`,
		`CREATE SCHEMA reports AUTHORIZATION admin`,
	}
	for _, sc := range scenarios {
		if !sc.noTableRight {
			steps = append(steps, `GRANT SELECT ON public.users TO `+pgx.Identifier{sc.role}.Sanitize())
		}
	}
	for _, sc := range scenarios {
		if sc.setup != "" {
			steps = append(steps, sc.setup)
		}
	}
	steps = append(steps, `ANALYZE public.users`)
	for _, step := range steps {
		if err := exec(step); err != nil {
			return err
		}
	}
	say("public.users holds %s accounts (email, username, password_hash are sensitive)", thousands(int64(users)))

	// The detector's role, publication, slot and DDL triggers, as an operator makes them:
	// pgtripwire setup --apply. The detector reads statistics and the WAL, never the tables.
	sensitive, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
	if err != nil {
		return err
	}
	plan, err := setup.Plan(setup.Options{Role: "pgtripwire", Tables: []config.SensitiveTable{sensitive}, WAL: true})
	if err != nil {
		return fmt.Errorf("plan the detector's set-up: %w", err)
	}
	if _, err := setup.Apply(ctx, conn, plan); err != nil {
		return fmt.Errorf("set up the detector: %w", err)
	}
	say("pgtripwire setup --apply: role pgtripwire (pg_monitor, REPLICATION, no table rights), publication and slot")
	return nil
}

// playBenign runs the benign traffic as roles app and admin.
func playBenign(ctx context.Context, srv *pgserver.Server, users int) error {
	app, err := pgx.Connect(ctx, srv.DSN("app", demoDatabase))
	if err != nil {
		return fmt.Errorf("connect as app: %w", err)
	}
	defer app.Close(context.WithoutCancel(ctx))
	admin, err := pgx.Connect(ctx, srv.DSN("admin", demoDatabase))
	if err != nil {
		return fmt.Errorf("connect as admin: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	return benign.play(ctx, app, admin, users)
}

// playBreach runs one scenario and waits for the detector's verdict on it.
func playBreach(ctx context.Context, srv *pgserver.Server, w *watch, sc scenario, opts Options) (Result, error) {
	res := Result{Scenario: sc.name, Role: sc.role, Required: sc.expect == required, CoveredBy: sc.coveredBy}
	conn, err := pgx.Connect(ctx, srv.DSN(sc.role, demoDatabase))
	if err != nil {
		return res, fmt.Errorf("connect as %s: %w", sc.role, err)
	}
	err = sc.run(ctx, conn)
	end := time.Now()
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return res, fmt.Errorf("breach %q: %w", sc.name, err)
	}
	a, ok, err := w.verdict(ctx, sc.role, float64(opts.Users), opts.AlertTimeout)
	if err != nil {
		return res, err
	}
	if ok {
		res.Detected, res.Judged, res.Alert = true, true, a
		// The firing line's time comes from the same clock; a poll may read the
		// statistics a hair before the client has the last row.
		res.TimeToDetect = max(0, a.Time.Sub(end))
		return res, nil
	}
	counted, err := w.rowsRead(sc.role)
	if err != nil {
		return res, err
	}
	res.Judged = counted >= float64(opts.Users)
	return res, nil
}
