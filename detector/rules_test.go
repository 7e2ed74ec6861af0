package detector_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/source/catalogwatch"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// startIn starts a detector whose alert log and state directory are in dir, so that a
// second detector started in the same dir is the first one restarted. stop stops it
// and waits for it.
func startIn(t *testing.T, db *pgtest.Database, dir string, adjust func(*config.Config)) (r *running, stop func()) {
	t.Helper()
	cfg := config.Defaults()
	cfg.Database.DSN = db.SuperuserDSN()
	users, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sensitive = []config.SensitiveTable{users}
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Alerts.File = filepath.Join(dir, "alerts.jsonl")
	cfg.Alerts.Stdout = false
	cfg.StateDir = filepath.Join(dir, "state")
	pollSettings(t, cfg, catalogwatch.Name).Enabled = false // cluster-wide: see startDetectorWith
	adjust(cfg)
	r = &running{registry: prometheus.NewRegistry(), alerts: cfg.Alerts.File, done: make(chan error, 1)}
	if r.d, err = detector.New(cfg, detector.Deps{Registry: r.registry}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.done <- r.d.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("detector.Run: got %v, want nil after cancellation", err)
		}
	}
	t.Cleanup(stop)
	r.waitReady(t, true, 30*time.Second)
	return r, stop
}

// readAs runs query as role and reads every row.
func readAs(t *testing.T, db *pgtest.Database, role, query string) {
	t.Helper()
	rows, err := db.Conn(t, role).Query(t.Context(), query)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// firingLines returns the firing lines of rule whose role label is role.
func firingLines(lines []model.Alert, rule, role string) []model.Alert {
	var got []model.Alert
	for _, a := range lines {
		if a.State == model.StateFiring && a.Rule == rule && a.Labels["role"] == role {
			got = append(got, a)
		}
	}
	return got
}

// #5 acceptance 3: a restart during a firing alert writes no second firing line, and
// what the rules learned survives it: a client seen before the restart is not new after.
func TestRestartKeepsRuleState(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 20_000)
	db.CreateRole(t, "newcomer")
	db.Exec(t, `GRANT SELECT ON public.users TO newcomer`)
	dir := t.TempDir()
	// A first-seen rule with a learning period a test can wait out, beside the pack.
	const learn = 6 * time.Second
	rules := filepath.Join(dir, "first-seen.yml")
	if err := os.WriteFile(rules, []byte(`groups:
  - name: test
    rules:
      - name: FirstReadByRole
        description: A role reads sensitive columns for the first time after learning.
        severity: warning
        match: event.source == "statements" && size(event.sensitive_read) > 0
        condition:
          first_seen: {key: [role, relation], learn_for: 6s}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	adjust := func(cfg *config.Config) { cfg.Rules.Files = []string{rules} }

	r, stop := startIn(t, db, dir, adjust)
	learningEnds := time.Now().Add(learn)
	readAs(t, db, "app", `SELECT email FROM users WHERE id = 1`)
	eventually(t, learn, "app's lookup seen while the rule learns", func() bool {
		return r.counter(t, "pgtripwire_sensitive_rows_read_total", map[string]string{"role": "app"}) >= 1
	})
	time.Sleep(time.Until(learningEnds) + time.Second) // the learning period is the scenario
	bulkRead(t, db)
	eventually(t, 10*time.Second, "SensitiveBulkRead and FirstReadByRole firing for mallory", func() bool {
		lines := r.lines(t)
		return len(firingLines(lines, "SensitiveBulkRead", "mallory")) == 1 &&
			len(firingLines(lines, "FirstReadByRole", "mallory")) == 1
	})
	stop()
	if _, err := os.Stat(filepath.Join(dir, "state", "rules.json")); err != nil {
		t.Fatalf("the rule state was not saved at shutdown: %v", err)
	}

	r, _ = startIn(t, db, dir, adjust)
	// The statements source's first poll after a start is a baseline: reads made before
	// it are history. Read only once it is done.
	eventually(t, 10*time.Second, "the statements source's baseline poll after the restart", func() bool {
		m := r.series(t, "pgtripwire_source_poll_duration_seconds", map[string]string{"source": "statements"})
		return m != nil && m.GetHistogram().GetSampleCount() >= 1
	})
	if got := r.gauge(t, "pgtripwire_alerts_firing", map[string]string{"rule": "SensitiveBulkRead"}); got != 1 {
		t.Errorf("pgtripwire_alerts_firing{rule=SensitiveBulkRead} after the restart: got %v, want the restored alert", got)
	}
	bulkRead(t, db)
	readAs(t, db, "app", `SELECT email FROM users WHERE id = 2`)
	readAs(t, db, "newcomer", `SELECT email FROM users WHERE id = 3`)
	// The newcomer's first read proves the restarted engine evaluates these events; by
	// then mallory's second dump and app's lookup have been evaluated too (same poll or
	// an earlier one).
	eventually(t, 20*time.Second, "the newcomer's read counted after the restart", func() bool {
		return r.counter(t, "pgtripwire_sensitive_rows_read_total", map[string]string{"role": "newcomer"}) >= 1
	})
	eventually(t, 10*time.Second, "FirstReadByRole firing for the newcomer after the restart", func() bool {
		return len(firingLines(r.lines(t), "FirstReadByRole", "newcomer")) == 1
	})
	eventually(t, 10*time.Second, "mallory's second dump counted", func() bool {
		return r.counter(t, "pgtripwire_sensitive_rows_read_total", map[string]string{"role": "mallory"}) >= 20_000
	})
	lines := r.lines(t)
	if got := firingLines(lines, "SensitiveBulkRead", "mallory"); len(got) != 1 {
		t.Errorf("got %d SensitiveBulkRead firing lines for mallory across the restart, want 1: %+v", len(got), got)
	}
	if got := firingLines(lines, "FirstReadByRole", "app"); len(got) != 0 {
		t.Errorf("app, seen while learning before the restart, is new after it: %+v", got)
	}
	for _, a := range lines {
		if a.State == model.StateResolved {
			t.Errorf("got a resolved line across the restart, want the alerts still firing: %+v", a)
		}
	}
}

// A changed rule file is reloaded while the detector runs; a broken one is refused and
// the running rules keep running.
func TestRuleFilesReloadOnChange(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 2_000)
	dir := t.TempDir()
	rules := filepath.Join(dir, "local.yml")
	write := func(threshold string) {
		t.Helper()
		// The size changes with the threshold, so even a same-second rewrite is seen.
		if err := os.WriteFile(rules, []byte(`groups:
  - name: local
    rules:
      - name: LocalBulkRead
        description: A local bulk-read rule with its own threshold.
        severity: critical
        match: event.source == "statements" && size(event.sensitive_read) > 0
        aggregate: {function: max, field: rows_per_call, window: 1m, by: [role, relation]}
        condition:
          threshold: {op: ">=", value: `+threshold+`}
`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("1000000")
	r, _ := startIn(t, db, dir, func(cfg *config.Config) {
		cfg.Rules.DefaultPack = false
		cfg.Rules.Files = []string{rules}
	})
	reloads := func(result string) float64 {
		return r.counter(t, "pgtripwire_rule_reloads_total", map[string]string{"result": result})
	}

	write("not-a-number")
	eventually(t, 10*time.Second, "the broken file refused", func() bool { return reloads("failure") == 1 })
	write("1000")
	eventually(t, 10*time.Second, "the fixed file reloaded", func() bool { return reloads("success") == 1 })
	bulkRead(t, db)
	eventually(t, 10*time.Second, "LocalBulkRead firing at the reloaded threshold", func() bool {
		return len(firingLines(r.lines(t), "LocalBulkRead", "mallory")) == 1
	})
}
