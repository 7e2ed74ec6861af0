package detector_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

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
	return linesOf(lines, rule, role, model.StateFiring)
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
	// One configuration for both runs: the second detector is the first one restarted.
	cfg := detectortest.Config(t, db)
	cfg.Rules.Files = []string{rules}

	r := detectortest.Start(t, cfg)
	learningEnds := time.Now().Add(learn)
	readAs(t, db, "app", `SELECT email FROM users WHERE id = 1`)
	eventually(t, learn, "app's lookup seen while the rule learns", func() bool {
		return r.Counter(t, "pgtripwire_sensitive_rows_read_total", map[string]string{"role": "app"}) >= 1
	})
	time.Sleep(time.Until(learningEnds) + time.Second) // the learning period is the scenario
	bulkRead(t, db)
	eventually(t, 10*time.Second, "SensitiveBulkRead and FirstReadByRole firing for mallory", func() bool {
		lines := r.Lines(t)
		return len(firingLines(lines, "SensitiveBulkRead", "mallory")) == 1 &&
			len(firingLines(lines, "FirstReadByRole", "mallory")) == 1
	})
	r.Stop()
	if _, err := os.Stat(filepath.Join(cfg.StateDir, "rules.json")); err != nil {
		t.Fatalf("the rule state was not saved at shutdown: %v", err)
	}

	r = detectortest.Start(t, cfg)
	// The statements source's first poll after a start is a baseline: reads made before
	// it are history. Read only once it is done.
	eventually(t, 10*time.Second, "the statements source's baseline poll after the restart", func() bool {
		m := r.Series(t, "pgtripwire_source_poll_duration_seconds", map[string]string{"source": "statements"})
		return m != nil && m.GetHistogram().GetSampleCount() >= 1
	})
	if got := r.Gauge(t, "pgtripwire_alerts_firing", map[string]string{"rule": "SensitiveBulkRead"}); got != 1 {
		t.Errorf("pgtripwire_alerts_firing{rule=SensitiveBulkRead} after the restart: got %v, want the restored alert", got)
	}
	bulkRead(t, db)
	readAs(t, db, "app", `SELECT email FROM users WHERE id = 2`)
	readAs(t, db, "newcomer", `SELECT email FROM users WHERE id = 3`)
	// The newcomer's first read proves the restarted engine evaluates these events; by
	// then mallory's second dump and app's lookup have been evaluated too (same poll or
	// an earlier one).
	eventually(t, 20*time.Second, "the newcomer's read counted after the restart", func() bool {
		return r.Counter(t, "pgtripwire_sensitive_rows_read_total", map[string]string{"role": "newcomer"}) >= 1
	})
	eventually(t, 10*time.Second, "FirstReadByRole firing for the newcomer after the restart", func() bool {
		return len(firingLines(r.Lines(t), "FirstReadByRole", "newcomer")) == 1
	})
	eventually(t, 10*time.Second, "mallory's second dump counted", func() bool {
		return r.Counter(t, "pgtripwire_sensitive_rows_read_total", map[string]string{"role": "mallory"}) >= 20_000
	})
	lines := r.Lines(t)
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
	cfg := detectortest.Config(t, db)
	cfg.Rules.DefaultPack = false
	cfg.Rules.Files = []string{rules}
	r := detectortest.Start(t, cfg)
	reloads := func(result string) float64 {
		return r.Counter(t, "pgtripwire_rule_reloads_total", map[string]string{"result": result})
	}

	write("not-a-number")
	eventually(t, 10*time.Second, "the broken file refused", func() bool { return reloads("failure") == 1 })
	write("1000")
	eventually(t, 10*time.Second, "the fixed file reloaded", func() bool { return reloads("success") == 1 })
	bulkRead(t, db)
	eventually(t, 10*time.Second, "LocalBulkRead firing at the reloaded threshold", func() bool {
		return len(firingLines(r.Lines(t), "LocalBulkRead", "mallory")) == 1
	})
}

// A configuration-management tool rewrites a rule file by truncating it first: for a few
// seconds the file is empty. The detector must not take that for a pack without rules —
// every rule dropped and its firing alerts resolved, then fired again — but refuse it
// like any bad file, and load the rewritten file once it has settled.
func TestRuleFileEmptiedWhileRewrittenKeepsItsAlerts(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 2_000)
	rules := filepath.Join(t.TempDir(), "local.yml")
	content := []byte(`groups:
  - name: local
    rules:
      - name: LocalBulkRead
        description: A local bulk-read rule.
        severity: critical
        match: event.source == "statements" && size(event.sensitive_read) > 0
        aggregate: {function: max, field: rows_per_call, window: 1h, by: [role, relation]}
        condition:
          threshold: {op: ">=", value: 1000}
`)
	if err := os.WriteFile(rules, content, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := detectortest.Config(t, db)
	cfg.Rules.DefaultPack = false
	cfg.Rules.Files = []string{rules}
	r := detectortest.Start(t, cfg)
	bulkRead(t, db)
	eventually(t, 10*time.Second, "LocalBulkRead firing", func() bool {
		return len(firingLines(r.Lines(t), "LocalBulkRead", "mallory")) == 1
	})
	reloads := func(result string) float64 {
		return r.Counter(t, "pgtripwire_rule_reloads_total", map[string]string{"result": result})
	}

	if err := os.Truncate(rules, 0); err != nil { // the tool truncates…
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the emptied file refused", func() bool { return reloads("failure") == 1 })
	// …and writes the new content, a little longer this time so that its stamp changes.
	if err := os.WriteFile(rules, append(content, "# rewritten\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the rewritten file reloaded", func() bool { return reloads("success") == 1 })
	for _, a := range r.Lines(t) {
		if a.State == model.StateResolved {
			t.Errorf("got %s resolved while its rule file was rewritten, want it still firing", a.Rule)
		}
	}
	if n := len(firingLines(r.Lines(t), "LocalBulkRead", "mallory")); n != 1 {
		t.Errorf("got %d firing lines, want the one from before the rewrite", n)
	}
}
