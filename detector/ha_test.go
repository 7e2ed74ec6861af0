package detector_test

import (
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/ha"
	"github.com/pgtripwire/pgtripwire/internal/testkit/amtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// Two detectors given the same two targets: each watches one (the targets spread
// across the detectors that are up), a read in either pages exactly once across both
// alert logs, and a detector whose lease connection fails stops that target's
// sources at once, while the target is watched again within seconds.
func TestTargetsSpreadAndALostLeaseStopsItsSources(t *testing.T) {
	t.Parallel()
	users, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
	if err != nil {
		t.Fatal(err)
	}
	dbs := map[string]*pgtest.Database{}
	var targets []config.Target
	for _, cluster := range []string{"eu", "us"} {
		db := pgtest.NewDatabase(t)
		seedUsers(t, db, 5_000)
		for _, sql := range ha.SchemaSQL {
			db.Exec(t, sql)
		}
		dbs[cluster] = db
		targets = append(targets, config.Target{Cluster: cluster, Primary: config.Server{DSN: db.SuperuserDSN()},
			Databases: config.TargetDatabases{List: []config.TargetDatabase{{Name: db.Name}}}, Sensitive: []config.SensitiveTable{users}})
	}
	detectors := map[string]*detectortest.Detector{}
	for _, name := range []string{"a", "b"} {
		cfg := config.Defaults()
		detectortest.Local(t, cfg)
		detectortest.PollEvery(t, "statements", detectortest.PollSettings(t, cfg, "statements"), 500*time.Millisecond)
		detectortest.PollSettings(t, cfg, "catalog").Enabled = false
		cfg.Targets = targets
		cfg.HighAvailability.Enabled = true
		cfg.HighAvailability.SaveInterval = time.Second
		detectors[name] = detectortest.Run(t, cfg)
	}
	holder := func(cluster string) []string {
		var out []string
		for name, d := range detectors {
			if d.Gauge(t, "pgtripwire_lease_held", map[string]string{"cluster": cluster}) == 1 {
				out = append(out, name)
			}
		}
		return out
	}
	spread := func() bool {
		eu, us := holder("eu"), holder("us")
		return len(eu) == 1 && len(us) == 1 && eu[0] != us[0]
	}
	eventually(t, 15*time.Second, "each detector watching one target", spread)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if !spread() {
			t.Fatalf("the targets moved while both detectors were up: eu %v, us %v", holder("eu"), holder("us"))
		}
	}

	// A third detector, with nothing to watch, is ready: a rolling update or a
	// PodDisruptionBudget counts it as up.
	c := config.Defaults()
	detectortest.Local(t, c)
	detectortest.PollEvery(t, "statements", detectortest.PollSettings(t, c, "statements"), 500*time.Millisecond)
	detectortest.PollSettings(t, c, "catalog").Enabled = false
	c.Targets, c.HighAvailability.Enabled, c.HighAvailability.SaveInterval = targets, true, time.Second
	detectors["c"] = detectortest.Start(t, c)
	eventually(t, 10*time.Second, "c asking for both leases", func() bool {
		return detectors["c"].Series(t, "pgtripwire_lease_held", map[string]string{"cluster": "eu"}) != nil &&
			detectors["c"].Series(t, "pgtripwire_lease_held", map[string]string{"cluster": "us"}) != nil
	})
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if eu, us := holder("eu"), holder("us"); len(eu) != 1 || len(us) != 1 || eu[0] == "c" || us[0] == "c" {
			t.Fatalf("a third detector took a target held by another: eu %v, us %v", eu, us)
		}
	}

	// A bulk read in each target pages once, by the detector that watches it.
	pagesOf := func(cluster string) (n int, by []string) {
		for name, d := range detectors {
			for _, a := range d.Lines(t) {
				if a.State == model.StateFiring && a.Rule == "SensitiveBulkRead" && a.Labels[model.LabelCluster] == cluster {
					n++
					by = append(by, name)
				}
			}
		}
		return n, by
	}
	for cluster, db := range dbs {
		eventually(t, 10*time.Second, cluster+"'s statements source up", func() bool {
			return detectors[holder(cluster)[0]].Gauge(t, "pgtripwire_source_up", map[string]string{"cluster": cluster, "source": "statements"}) == 1
		})
		bulkRead(t, db)
		eventually(t, 10*time.Second, "the read in "+cluster+" paged", func() bool { n, _ := pagesOf(cluster); return n >= 1 })
	}

	// eu's holder loses its lease connection: its sources for eu stop at once.
	was := holder("eu")[0]
	dbs["eu"].Exec(t, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND classid = 1885828215 AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	lost := time.Now()
	eventually(t, 3*time.Second, was+" to stop watching eu", func() bool {
		return detectors[was].Series(t, "pgtripwire_source_up", map[string]string{"cluster": "eu"}) == nil &&
			detectors[was].Gauge(t, "pgtripwire_lease_held", map[string]string{"cluster": "eu"}) == 0
	})
	t.Logf("%s stopped watching eu %s after its lease connection ended", was, time.Since(lost).Round(time.Millisecond))
	eventually(t, 10*time.Second, "eu watched again", func() bool { return len(holder("eu")) == 1 })
	if got := detectors[was].Counter(t, "pgtripwire_lease_losses_total", map[string]string{"cluster": "eu"}); got != 1 {
		t.Errorf("pgtripwire_lease_losses_total{cluster=eu} of %s = %v, want 1", was, got)
	}
	for cluster := range dbs {
		if n, by := pagesOf(cluster); n != 1 {
			t.Errorf("the read in %s paged %d times (by %v), want once: two detectors watched it, or its firing alert was fired again", cluster, n, by)
		}
	}
}

// State that cannot be decoded is said with DetectorStateLost and the target is
// watched without it; without the schema (setup not run) the target is watched too,
// and the detector is unready until its state can be written.
func TestHighAvailabilityWithoutUsableState(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		prepare func(db *pgtest.Database)
		lost    bool
	}{
		{"damaged", func(db *pgtest.Database) {
			for _, sql := range ha.SchemaSQL {
				db.Exec(t, sql)
			}
			db.Exec(t, `INSERT INTO pgtripwire.rule_state VALUES ('', now(), 'someone', '\x1f8b0000')`)
		}, true},
		{"no schema", func(*pgtest.Database) {}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDatabase(t)
			seedUsers(t, db, 5_000)
			tc.prepare(db)
			cfg := detectortest.Config(t, db)
			detectortest.PollEvery(t, "statements", detectortest.PollSettings(t, cfg, "statements"), 500*time.Millisecond)
			cfg.HighAvailability.Enabled = true
			r := detectortest.Run(t, cfg)
			eventually(t, 10*time.Second, "the lease held", func() bool {
				return r.Gauge(t, "pgtripwire_lease_held", map[string]string{"cluster": ""}) == 1
			})
			if tc.lost {
				r.WaitAlert(t, 10*time.Second, "DetectorStateLost", map[string]string{"object": ha.RuleStateTable})
			} else {
				eventually(t, 10*time.Second, "the failed state write said", func() bool {
					m := r.Series(t, "pgtripwire_source_up", map[string]string{"source": "rule_state", "server": "lease"})
					return m != nil && m.GetGauge().GetValue() == 0 && !r.Ready(t)
				})
			}
			eventually(t, 10*time.Second, "the statements source up", func() bool {
				return r.Gauge(t, "pgtripwire_source_up", map[string]string{"source": "statements"}) == 1
			})
			bulkRead(t, db)
			r.WaitAlert(t, 10*time.Second, "SensitiveBulkRead", map[string]string{"role": "mallory"})
			for _, a := range r.Lines(t) {
				if a.Rule == "DetectorStateLost" && !tc.lost {
					t.Errorf("DetectorStateLost without state to lose: %v", a.Labels)
				}
			}
		})
	}
}

// A detector stopped cleanly (a rolling update) hands its target over with its
// firing alert: the successor keeps Alertmanager's alert firing (same start), writes
// no second firing line, and the first detector, started again while the other holds
// the target, writes nothing of it. (After kill -9 rather than a clean stop, the
// restarted detector's restored Alertmanager set would hold the alert: New forgets
// it until the lease is held; no test here kills an in-process detector.)
func TestCleanHandoverKeepsAlertmanagerFiring(t *testing.T) {
	t.Parallel()
	am := amtest.Start(t)
	db := pgtest.NewDatabase(t)
	seedUsers(t, db, 5_000)
	for _, sql := range ha.SchemaSQL {
		db.Exec(t, sql)
	}
	configFor := func() *config.Config {
		cfg := detectortest.Config(t, db)
		detectortest.PollEvery(t, "statements", detectortest.PollSettings(t, cfg, "statements"), 500*time.Millisecond)
		cfg.HighAvailability.Enabled, cfg.HighAvailability.SaveInterval = true, time.Second
		cfg.Alerts.Alertmanager.URLs = []string{am.URL}
		// Alertmanager drops an alert nobody re-sends after four intervals: 4 s.
		cfg.Alerts.Alertmanager.ResendInterval = time.Second
		// Short, so that anything resolving the alert would within the test.
		cfg.Alerts.ResolveAfter = 2 * time.Second
		return cfg
	}
	cfgA := configFor()
	a := detectortest.Start(t, cfgA)
	eventually(t, 10*time.Second, "a watching", func() bool {
		return a.Gauge(t, "pgtripwire_lease_held", map[string]string{"cluster": ""}) == 1 &&
			a.Gauge(t, "pgtripwire_source_up", map[string]string{"source": "statements"}) == 1
	})
	b := detectortest.Start(t, configFor())
	bulkRead(t, db)
	fired := a.WaitAlert(t, 10*time.Second, "SensitiveBulkRead", map[string]string{"role": "mallory"})
	want := map[string]string{"alertname": "SensitiveBulkRead", "role": "mallory"}
	eventually(t, 10*time.Second, "the alert in Alertmanager", func() bool { _, ok := am.Find(t, want); return ok })

	a.Stop()
	eventually(t, 10*time.Second, "b taking over", func() bool {
		return b.Gauge(t, "pgtripwire_lease_held", map[string]string{"cluster": ""}) == 1
	})
	firingFor := func(what string, d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			got, ok := am.Find(t, want)
			if !ok {
				t.Fatalf("%s: the alert left Alertmanager (resolved, or nobody re-sent it)", what)
			}
			if !got.StartsAt.Equal(fired.Time.Truncate(time.Millisecond)) && got.StartsAt.Sub(fired.Time).Abs() >= time.Millisecond {
				t.Fatalf("%s: startsAt %v, want the firing time %v", what, got.StartsAt, fired.Time)
			}
		}
	}
	firingFor("after the handover", 6*time.Second)

	// a again, with its state directory and alert log, while b holds the target.
	again := detectortest.Start(t, cfgA)
	firingFor("with a back", 6*time.Second)
	if again.Gauge(t, "pgtripwire_lease_held", map[string]string{"cluster": ""}) != 0 {
		t.Error("a, started again, holds the target b holds")
	}
	for _, l := range b.Lines(t) {
		if l.Fingerprint == fired.Fingerprint {
			t.Errorf("b wrote a %s line of the alert a fired", l.State)
		}
	}
	// again writes to a's alert log: its one firing line, nothing since.
	var lines []string
	for _, l := range again.Lines(t) {
		if l.Fingerprint == fired.Fingerprint {
			lines = append(lines, string(l.State))
		}
	}
	if len(lines) != 1 || lines[0] != string(model.StateFiring) {
		t.Errorf("a's alert log holds %v for the alert, want its one firing line", lines)
	}
}
