package detector_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/faultfs"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// The detector's own state under faults (#20): across a restart whose rule state was
// lost or not saved, every episode has exactly one firing and one resolved line.

// readRule pages on every read of sensitive columns by the statements source and
// resolves ResolveAfter after the last one: a rule whose episodes a test can close.
const readRule = `groups:
  - name: test
    rules:
      - name: Read
        description: A read of sensitive columns.
        severity: warning
        match: event.source == "statements" && size(event.sensitive_read) > 0
`

func faultConfig(t *testing.T, db *pgtest.Database, resolveAfter time.Duration) *config.Config {
	t.Helper()
	cfg := detectortest.Config(t, db)
	rules := filepath.Join(t.TempDir(), "read.yml")
	if err := os.WriteFile(rules, []byte(readRule), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Rules.Files = []string{rules}
	cfg.Rules.DefaultPack = false
	cfg.Alerts.ResolveAfter = resolveAfter
	return cfg
}

// lines returns the alert log's lines of rule for role (any role when "").
func linesOf(lines []model.Alert, rule, role string, state model.State) []model.Alert {
	var got []model.Alert
	for _, a := range lines {
		if a.Rule == rule && a.State == state && (role == "" || a.Labels["role"] == role) {
			got = append(got, a)
		}
	}
	return got
}

// A rule state damaged beyond its previous generation: the detector starts and pages
// DetectorStateLost naming rules.json; what the alert log says was firing goes on when
// the read goes on (no second firing line) and is resolved once it stops (one resolved
// line).
func TestLostRuleStateIsSaidAndWhatItHeldResolved(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 2_000)
	cfg := faultConfig(t, db, 3*time.Second)
	// DetectorStateLost is in the default pack's detector group: keep the pack, with
	// the test's rule beside it.
	cfg.Rules.DefaultPack = true

	r := detectortest.Start(t, cfg)
	bulkRead(t, db)
	r.WaitAlert(t, 10*time.Second, "Read", map[string]string{"role": "mallory"})
	r.Stop()

	state := filepath.Join(cfg.StateDir, "rules.json")
	for _, p := range []string{state, state + atomicfile.PrevSuffix} {
		if err := os.WriteFile(p, []byte(`{"version": 1, "rul`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r = detectortest.Start(t, cfg)
	lost := r.WaitAlert(t, 10*time.Second, "DetectorStateLost", map[string]string{"object": "rules.json"})
	if lost.Severity != model.SeverityWarning {
		t.Errorf("DetectorStateLost severity: %s, want warning", lost.Severity)
	}
	bulkRead(t, db) // the read goes on after the restart: the same episode
	eventually(t, 20*time.Second, "mallory's episode resolved", func() bool {
		return len(linesOf(r.Lines(t), "Read", "mallory", model.StateResolved)) == 1
	})
	time.Sleep(time.Second)
	lines := r.Lines(t)
	if got := linesOf(lines, "Read", "mallory", model.StateFiring); len(got) != 1 {
		t.Errorf("firing lines of mallory's read: %d, want 1 (no second firing after the lost state)", len(got))
	}
	if got := linesOf(lines, "Read", "mallory", model.StateResolved); len(got) != 1 {
		t.Errorf("resolved lines of mallory's read: %d, want 1", len(got))
	}
	if got := r.Gauge(t, "pgtripwire_alerts_firing", map[string]string{"rule": "Read"}); got != 0 {
		t.Errorf("pgtripwire_alerts_firing{rule=Read}: %v, want 0", got)
	}
}

// The state directory full (the alert log elsewhere): /readyz says the rule state
// cannot be saved; once space is back the detector is ready again. A restart after the
// failed saves neither repeats the firing line the state missed nor writes a second
// resolved line for the one it held.
func TestStateDirFullIsUnreadyAndRestartsRepeatNothing(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 2_000)
	cfg := faultConfig(t, db, 3*time.Second)
	cfg.StateDir = filepath.Join(faultfs.Tmpfs(t, 1<<20), "state")

	r := detectortest.Start(t, cfg)
	// Episode 1 fires while the state can be saved, resolves while it cannot.
	bulkRead(t, db)
	r.WaitAlert(t, 10*time.Second, "Read", map[string]string{"role": "mallory"})
	eventually(t, 5*time.Second, "the firing saved", func() bool {
		return r.Counter(t, "pgtripwire_rule_state_saves_total", map[string]string{"result": "ok"}) >= 1
	})
	free := faultfs.Fill(t, filepath.Dir(cfg.StateDir))
	eventually(t, 15*time.Second, "mallory's episode resolved", func() bool {
		return len(linesOf(r.Lines(t), "Read", "mallory", model.StateResolved)) == 1
	})
	r.WaitReady(t, false, 10*time.Second)
	if why := readyz(t, r); !strings.Contains(why, "rule_state") || !strings.Contains(why, "no space left") {
		t.Errorf("/readyz: %q, want it to name rule_state and the full disk", why)
	}
	// Episode 2 fires while the state cannot be saved.
	readAs(t, db, "app", `SELECT email FROM users`)
	r.WaitAlert(t, 10*time.Second, "Read", map[string]string{"role": "app"})
	r.Stop()
	free()

	r = detectortest.Start(t, cfg)
	// The restarted detector resolves app's episode (firing in the log, not in the
	// state) and forgets mallory's (firing in the stale state, resolved in the log).
	eventually(t, 10*time.Second, "app's episode resolved after the restart", func() bool {
		return len(linesOf(r.Lines(t), "Read", "app", model.StateResolved)) == 1
	})
	time.Sleep(2 * cfg.Alerts.ResolveAfter) // a second resolution of mallory's would be due by now
	lines := r.Lines(t)
	for _, role := range []string{"mallory", "app"} {
		if f, res := len(linesOf(lines, "Read", role, model.StateFiring)), len(linesOf(lines, "Read", role, model.StateResolved)); f != 1 || res != 1 {
			t.Errorf("%s's episode: %d firing and %d resolved lines across the restart, want 1 and 1", role, f, res)
		}
	}
	if !r.Ready(t) {
		t.Errorf("not ready after the restart with space: %s", readyz(t, r))
	}
}

func readyz(t *testing.T, r *detectortest.Detector) string {
	t.Helper()
	resp, err := http.Get(r.URL("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
