package detector_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/source"
	logsource "github.com/pgtripwire/pgtripwire/detector/source/log"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/workload"
	"github.com/pgtripwire/pgtripwire/model"
)

// #16 acceptance 2, through the real server log: a few mistyped passwords raise nothing;
// 50 failed logins over 10 roles from one client are one PasswordSpraying alert (and no
// brute force: 5 failures a role); 30 failures as one role are one BruteForce alert (and
// the spraying alert stays one).
func TestFailedLoginsFromTheServerLog(t *testing.T) {
	t.Parallel()
	srv, logDir := pgtest.NewLoggingServer(t, "jsonlog", nil)
	db := pgtest.NewDatabaseIn(t, srv)
	workload.Users(t, db, 10)
	sprayed := make([]string, 10)
	for i := range sprayed {
		sprayed[i] = fmt.Sprintf("sprayed%d", i)
	}
	for _, role := range append([]string{"alice", "bob", "dba"}, sprayed...) {
		db.CreateRole(t, role)
		pgtest.RequirePassword(t, srv, role, "right-"+role)
	}

	cfg := detectortest.Config(t, db)
	detectortest.EverySource(t, cfg, 500*time.Millisecond)
	ls, ok := source.Lookup[*logsource.Settings](cfg.Sources, logsource.Name)
	if !ok {
		t.Fatal("no log source in the configuration")
	}
	ls.Enabled, ls.Directory = true, logDir
	d := detectortest.Start(t, cfg)

	failures := 0
	login := func(role, password string) {
		t.Helper()
		u, err := url.Parse(db.DSN(role))
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(role, password)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, u.String())
		if right := password == "right-"+role; right != (err == nil) {
			t.Fatalf("login as %s with the right password %v: got error %v", role, right, err)
		}
		if err != nil {
			failures++
			return
		}
		_ = conn.Close(ctx)
	}
	// seen waits until the log source has made an event of every failure so far.
	seen := func() {
		t.Helper()
		eventually(t, 30*time.Second, fmt.Sprintf("%d auth_failed events", failures), func() bool {
			return d.Counter(t, "pgtripwire_log_events_total", map[string]string{"kind": logsource.KindAuthFailed}) >= float64(failures)
		})
	}
	count := func(rule string) int {
		n := 0
		for _, a := range d.Lines(t) {
			if a.Rule == rule && a.State == model.StateFiring {
				n++
			}
		}
		return n
	}

	// Mistyped passwords, each followed by the right one.
	login("alice", "rigth-alice")
	login("alice", "right-alice")
	login("bob", "right-bbo")
	login("bob", "right-bob")
	login("alice", "right-alcie")
	login("alice", "right-alice")
	seen()
	if lines := d.Lines(t); len(lines) > 0 {
		t.Fatalf("a few mistyped passwords raised %s: %v", lines[0].Rule, lines[0].Labels)
	}

	start := time.Now()
	for round, password := range []string{"123456", "password", "Summer2026!", "qwerty", "letmein"} {
		for _, role := range sprayed {
			login(role, password)
		}
		t.Logf("spraying round %d done after %s", round+1, time.Since(start).Round(time.Millisecond))
	}
	a := d.WaitAlert(t, 30*time.Second, "PasswordSpraying", map[string]string{model.LabelClientAddr: "127.0.0.1"})
	t.Logf("PasswordSpraying fired %s after the spraying began: %v, value %v", a.Time.Sub(start).Round(10*time.Millisecond), a.Labels, a.Value)
	seen()
	if got := count("PasswordSpraying"); got != 1 {
		t.Errorf("50 failures over 10 roles from one client: %d PasswordSpraying alerts, want 1", got)
	}
	if got := count("BruteForce"); got != 0 {
		t.Errorf("5 failures a role: %d BruteForce alerts, want none", got)
	}

	start = time.Now()
	for i := range 30 {
		login("dba", fmt.Sprintf("guess%d", i))
	}
	a = d.WaitAlert(t, 30*time.Second, "BruteForce", map[string]string{model.LabelRole: "dba"})
	t.Logf("BruteForce fired %s after the guessing began: %v, value %v", a.Time.Sub(start).Round(10*time.Millisecond), a.Labels, a.Value)
	seen()
	if got := count("BruteForce"); got != 1 {
		t.Errorf("30 failures as dba: %d BruteForce alerts, want 1", got)
	}
	if got := count("PasswordSpraying"); got != 1 {
		t.Errorf("after the brute force: %d PasswordSpraying alerts, want still 1", got)
	}
	for _, a := range d.Lines(t) {
		if r := a.Labels[model.LabelRole]; r == "alice" || r == "bob" {
			t.Errorf("a mistyped password raised %s: %v", a.Rule, a.Labels)
		}
	}
}
