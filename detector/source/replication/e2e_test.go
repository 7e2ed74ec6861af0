package replication_test

import (
	"slices"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/source/catalogwatch"
	"github.com/pgtripwire/pgtripwire/detector/source/replication"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/workload"
	"github.com/pgtripwire/pgtripwire/model"
)

// The whole detector, with the default rule pack and the replication source at its
// defaults, on a cluster of the test's own (detectortest.Config: the superuser, the
// catalog watch off).

const rule = "UnexpectedReplicationConnection"

// walsenders returns how many walsenders the source last judged so.
func walsenders(t *testing.T, d *detectortest.Detector, verdict string) float64 {
	t.Helper()
	return d.Gauge(t, "pgtripwire_replication_walsenders", map[string]string{"verdict": verdict})
}

// waitPolls waits until the replication source has polled n more times, so that an
// absence asserted after it covers what the source saw.
func waitPolls(t *testing.T, d *detectortest.Detector, n float64) {
	t.Helper()
	polls := func() float64 {
		return d.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": replication.Name})
	}
	want := polls() + n
	sourcetest.Eventually(t, 30*time.Second, "replication polls", func() bool { return polls() >= want })
}

// pages returns the firing lines of rule in d's alert log.
func pages(t *testing.T, d *detectortest.Detector) []model.Alert {
	t.Helper()
	var out []model.Alert
	for _, a := range d.Lines(t) {
		if a.Rule == rule && a.State == model.StateFiring {
			out = append(out, a)
		}
	}
	return out
}

// Issue #15, point 4: pg_basebackup by a role with REPLICATION that nobody declared
// pages critical within 10 s, naming the role and the client; its two connections
// (the backup and the WAL stream beside it) are one page.
//
// The application's benign traffic (#15 point 2) runs alongside and raises nothing.
func TestBaseBackupPages(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	workload.Users(t, db, 5000)
	db.CreateRole(t, "mallory", "REPLICATION")
	d := detectortest.Start(t, detectortest.Config(t, db))
	workload.Benign(t, db, 5000)

	start := time.Now()
	baseBackup(t, db.Server, "mallory")
	got := d.WaitAlert(t, 10*time.Second, rule, map[string]string{"role": "mallory", "client_addr": "127.0.0.1"})
	t.Logf("paged %v after pg_basebackup started", time.Since(start).Round(time.Millisecond))
	want := map[string]string{"source": "replication", "kind": replication.KindUnexpected, "operation": "backup",
		"application": "pg_basebackup"}
	for k, v := range want {
		if got.Labels[k] != v {
			t.Errorf("label %s: got %q, want %q (alert %+v)", k, got.Labels[k], v, got)
		}
	}
	if got.Severity != model.SeverityCritical || got.Annotations["summary"] == "" {
		t.Errorf("got %+v, want a critical page with a summary", got)
	}

	byOp := map[string]string{"operation": replication.OpBackup}
	sourcetest.Eventually(t, 30*time.Second, "the WAL stream's walsender reported too", func() bool {
		return d.Counter(t, "pgtripwire_replication_unexpected_total", byOp) >= 2
	})
	waitPolls(t, d, 2)
	if p := pages(t, d); len(p) != 1 {
		t.Errorf("got %d pages for one pg_basebackup, want 1: %+v", len(p), p)
	}
	for _, a := range d.Lines(t) {
		if slices.Contains(workload.BenignRoles, a.Labels[model.LabelRole]) {
			t.Errorf("the benign traffic raised %s: %v", a.Rule, a.Labels)
		}
	}
}

// The same pg_basebackup by a declared backup client raises nothing: neither this
// source nor the catalog watch, which sees its temporary slot.
func TestAllowedBaseBackupRaisesNothing(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	db.CreateRole(t, "backup", "REPLICATION")
	cfg := detectortest.Config(t, db)
	cfg.Replication.Allowed = []config.AllowedReplication{{Role: "backup", ClientCIDR: "127.0.0.1/32"}}
	detectortest.PollSettings(t, cfg, catalogwatch.Name).Enabled = true // the cluster is this test's own
	d := detectortest.Start(t, cfg)

	baseBackup(t, db.Server, "backup")
	sourcetest.Eventually(t, 30*time.Second, "both of pg_basebackup's walsenders judged allowed", func() bool {
		return walsenders(t, d, "allowed") >= 2
	})
	waitPolls(t, d, 2)
	catalogPolls := d.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": catalogwatch.Name})
	sourcetest.Eventually(t, 10*time.Second, "two catalog polls", func() bool {
		return d.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": catalogwatch.Name}) >= catalogPolls+2
	})
	if p := pages(t, d); len(p) != 0 {
		t.Errorf("got %+v, want no page for a declared backup", p)
	}
	for _, a := range d.Lines(t) {
		if a.State == model.StateFiring {
			t.Errorf("got %s %v, want no page at all for a declared backup (its temporary slot included)", a.Rule, a.Labels)
		}
	}
}

// The detector's own WAL source streams over a replication connection: it raises
// nothing. A logical stream of another slot of the same database, by another role,
// pages.
func TestOwnStreamRaisesNothingAnotherPages(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	db.CreateRole(t, "mallory", "REPLICATION")
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text)`)
	cfg := detectortest.Config(t, db)
	w := wal.SettingsOf(cfg.Sources)
	w.Enabled, w.Slot, w.Publication = wal.On, "pgtripwire", "pgtripwire"
	d := detectortest.Start(t, cfg)

	sourcetest.Eventually(t, 30*time.Second, "the WAL source's walsender judged own", func() bool { return walsenders(t, d, "own") == 1 })
	waitPolls(t, d, 2)
	if p := pages(t, d); len(p) != 0 {
		t.Fatalf("got %+v, want no page for the detector's own stream", p)
	}

	start := time.Now()
	recvLogical(t, db, "mallory", "exfil")
	got := d.WaitAlert(t, 10*time.Second, rule, map[string]string{"role": "mallory", "operation": "logical",
		"client_addr": "local", "application": "pg_recvlogical", "database": db.Name})
	t.Logf("paged %v after pg_recvlogical started", time.Since(start).Round(time.Millisecond))
	if got.Severity != model.SeverityCritical {
		t.Errorf("got %+v, want critical", got)
	}
	if n := walsenders(t, d, "own"); n != 1 {
		t.Errorf("got %v own walsenders, want the WAL source's still streaming", n)
	}
	if p := pages(t, d); len(p) != 1 {
		t.Errorf("got %d pages, want only pg_recvlogical's: %+v", len(p), p)
	}
}
