// Package detectortest runs the whole detector in-process for a test: the configuration
// the integration tests share (Config), a detector running until the test ends (Start),
// and what the tests read back from it (its alert log, its metrics, its readiness).
//
// It is a test kit: production code never imports it. It is not for tests of the binary
// (cmd/pgtripwire), which write real configuration files and start the real process.
package detectortest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/activity"
	"github.com/pgtripwire/pgtripwire/detector/source/catalogwatch"
	logsource "github.com/pgtripwire/pgtripwire/detector/source/log"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

// Config returns the defaults, connected as the superuser to db, with public.users'
// email, username and password_hash sensitive, made Local, and the catalog watch off:
// it sees the whole cluster's roles and physical slots, which the parallel tests
// sharing the cluster change all the time. Tests that are about it turn it on
// (PollSettings).
func Config(t testing.TB, db *pgtest.Database) *config.Config {
	t.Helper()
	cfg := config.Defaults()
	cfg.Database.DSN = db.SuperuserDSN()
	users, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sensitive = []config.SensitiveTable{users}
	Local(t, cfg)
	PollSettings(t, cfg, catalogwatch.Name).Enabled = false
	return cfg
}

// Local makes cfg run inside the test: HTTP on a free loopback port, the alert log
// (alerts.jsonl) and the state directory (state) in a new temporary directory, and no
// alert lines on stdout.
func Local(t testing.TB, cfg *config.Config) {
	t.Helper()
	dir := t.TempDir()
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Alerts.File = filepath.Join(dir, "alerts.jsonl")
	cfg.Alerts.Stdout = false
	cfg.StateDir = filepath.Join(dir, "state")
}

// PollSettings returns the settings of the polling source called name in cfg, to change
// them; it fails the test when cfg has no such polling source.
func PollSettings(t testing.TB, cfg *config.Config, name string) *source.PollSettings {
	t.Helper()
	s, ok := source.Lookup[*source.PollSettings](cfg.Sources, name)
	if !ok {
		t.Fatalf("no polling source %q in the configuration", name)
	}
	return s
}

// EverySource turns every polling source of cfg on, polling at interval (PollEvery).
// The WAL source is left as it is: a test that wants it names its slot and publication.
func EverySource(t testing.TB, cfg *config.Config, interval time.Duration) {
	t.Helper()
	for _, c := range cfg.Sources.All() {
		PollEvery(t, c.Name, c.Settings, interval)
	}
}

// PollEvery turns the source called name on, polling at interval. The WAL source streams
// and has no interval: its settings are left as they are. The log source reads files:
// it is turned on (in an empty directory when it has none). Settings of a type it does not
// know fail the test, so that a new source cannot escape the tests that mean "every
// source": teach PollEvery how to turn it on.
func PollEvery(t testing.TB, name string, settings source.Settings, interval time.Duration) {
	t.Helper()
	switch s := settings.(type) {
	case *source.PollSettings:
		s.Enabled, s.Interval = true, interval
	case *activity.Settings:
		s.Enabled, s.Interval = true, interval
	case *wal.Settings:
	case *logsource.Settings:
		// It reads files, not a database: on, and in an empty directory of the test's
		// when it was given nothing to read.
		s.Enabled = true
		if s.Directory == "" && s.Syslog.Listen == "" {
			s.Directory = t.TempDir()
		}
	default:
		t.Fatalf("source %s: settings %T: detectortest does not know how to turn it on at an interval", name, settings)
	}
}

// Detector is a detector running in the test's process.
type Detector struct {
	// Registry holds the detector's metrics: what /metrics serves.
	Registry *prometheus.Registry

	t        testing.TB
	d        *detector.Detector
	alertLog string
	cancel   context.CancelFunc
	done     chan struct{}
	err      error // what Run returned, once done is closed
	stopOnce sync.Once
}

// Start runs a detector on cfg until the test ends (or Stop), and returns once /readyz
// says ready, failing the test after 30 s. deps are at most one detector.Deps;
// without a Registry, the detector's metrics go to a fresh one. When the detector stops,
// Run must have returned nil.
func Start(t testing.TB, cfg *config.Config, deps ...detector.Deps) *Detector {
	t.Helper()
	d := Run(t, cfg, deps...)
	d.WaitReady(t, true, 30*time.Second)
	return d
}

// Run is Start without the wait for readiness, for a detector that is not expected to be
// ready (one that cannot connect, say).
func Run(t testing.TB, cfg *config.Config, deps ...detector.Deps) *Detector {
	t.Helper()
	if len(deps) > 1 {
		t.Fatalf("detectortest.Run: got %d Deps, want at most one", len(deps))
	}
	var dd detector.Deps
	if len(deps) == 1 {
		dd = deps[0]
	}
	if dd.Registry == nil {
		dd.Registry = prometheus.NewRegistry()
	}
	det, err := detector.New(cfg, dd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Detector{Registry: dd.Registry, t: t, d: det, alertLog: cfg.Alerts.File, cancel: cancel, done: make(chan struct{})}
	go func() {
		d.err = det.Run(ctx)
		close(d.done)
	}()
	t.Cleanup(d.Stop)
	return d
}

// Stop stops the detector and waits for it, failing the test unless Run returned nil.
// Stopping a stopped detector does nothing.
func (d *Detector) Stop() {
	d.stopOnce.Do(func() {
		d.cancel()
		<-d.done
		if d.err != nil {
			d.t.Errorf("detector.Run: got %v, want nil after cancellation", d.err)
		}
	})
}

// Done is closed when Run has returned, stopped or not; Err then says what it returned.
func (d *Detector) Done() <-chan struct{} { return d.done }

// Err is what Run returned, once Done is closed; nil before.
func (d *Detector) Err() error {
	select {
	case <-d.done:
		return d.err
	default:
		return nil
	}
}

// Addr is the host:port the HTTP endpoints listen on.
func (d *Detector) Addr() string { return d.d.Addr().String() }

// URL is the address of the HTTP endpoint at path ("/metrics").
func (d *Detector) URL(path string) string { return "http://" + d.Addr() + path }

// Ready reports /readyz's verdict.
func (d *Detector) Ready(t testing.TB) bool {
	t.Helper()
	resp, err := http.Get(d.URL("/readyz"))
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitReady waits until /readyz's verdict is want, failing the test after timeout.
func (d *Detector) WaitReady(t testing.TB, want bool, timeout time.Duration) {
	t.Helper()
	sourcetest.Eventually(t, timeout, fmt.Sprintf("/readyz ready=%v", want), func() bool { return d.Ready(t) == want })
}

// Lines returns the alert log's lines so far.
func (d *Detector) Lines(t testing.TB) []model.Alert {
	t.Helper()
	f, err := os.Open(d.alertLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []model.Alert
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var a model.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("alert line %q: %v", sc.Text(), err)
		}
		got = append(got, a)
	}
	return got
}

// WaitFiring waits for a firing line in the alert log and returns the first one.
func (d *Detector) WaitFiring(t testing.TB, timeout time.Duration) model.Alert {
	t.Helper()
	return d.WaitAlert(t, timeout, "", nil)
}

// WaitAlert waits for a firing line of rule ("": any rule) whose labels include labels,
// and returns the first one.
func (d *Detector) WaitAlert(t testing.TB, timeout time.Duration, rule string, labels map[string]string) model.Alert {
	t.Helper()
	what := "a firing alert"
	if rule != "" {
		what = "a firing " + rule + " alert"
	}
	if len(labels) > 0 {
		what += fmt.Sprintf(" with %v", labels)
	}
	var got model.Alert
	sourcetest.Eventually(t, timeout, what, func() bool {
		for _, a := range d.Lines(t) {
			if a.State != model.StateFiring || (rule != "" && a.Rule != rule) {
				continue
			}
			match := true
			for k, v := range labels {
				match = match && a.Labels[k] == v
			}
			if match {
				got = a
				return true
			}
		}
		return false
	})
	return got
}

// Counter returns the value of a counter series, 0 when it does not exist.
func (d *Detector) Counter(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	return d.Series(t, name, labels).GetCounter().GetValue()
}

// Gauge returns the value of a gauge series, 0 when it does not exist.
func (d *Detector) Gauge(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	return d.Series(t, name, labels).GetGauge().GetValue()
}

// Series finds the first series of name whose labels include labels; nil if none.
func (d *Detector) Series(t testing.TB, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	families, err := d.d.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, labels) {
				return m
			}
		}
	}
	return nil
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}
