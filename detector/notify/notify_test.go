package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/internal/testkit/amtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/faultfs"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func transition(rule, role string, state model.State, at time.Time) model.Alert {
	labels := map[string]string{"table": "public.users", "role": role, "columns": "email,password_hash", "source": "statements"}
	return model.Alert{
		Time: at, State: state, Rule: rule, Severity: model.SeverityCritical,
		Fingerprint: model.Fingerprint(rule, labels), Value: 50000, Labels: labels,
		Annotations: map[string]string{"summary": "Bulk read by " + role, "runbook_url": "https://example/runbook"},
	}
}

type running struct {
	n        *Notifier
	reg      *prometheus.Registry
	health   *healthRecorder
	alertLog string // its path
	stop     func()
}

// start runs a Notifier with quick retries; its alert log is in the state directory
// unless cfg names one.
func start(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.AlertLog == "" {
		cfg.AlertLog = filepath.Join(cfg.StateDir, "alerts.jsonl")
	}
	cfg.RetryInitial, cfg.RetryMax = 50*time.Millisecond, 300*time.Millisecond
	reg := prometheus.NewRegistry()
	h := newHealthRecorder()
	n, err := New(cfg, h.Status, zap.NewNop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: got %v, want context.Canceled", err)
		}
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(stop)
	return &running{n: n, reg: reg, health: h, alertLog: cfg.AlertLog, stop: stop}
}

// write hands a transition to the notifier and waits until the alert log and the
// spool have it, as the WAL source does before confirming a position.
func (r *running) write(t *testing.T, a model.Alert) {
	t.Helper()
	if _, err := r.n.Exec(context.Background(), Transition{Alert: a}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.n.WaitWritten(ctx); err != nil {
		t.Fatalf("transition not written: %v (health: %v)", err, r.health.problems())
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func amConfig(urls ...string) *AlertmanagerConfig {
	return &AlertmanagerConfig{URLs: urls, ResendInterval: 500 * time.Millisecond, ResolvedResendFor: 2 * time.Second,
		Timeout: 2 * time.Second, ResolveHold: 2 * time.Second,
		GeneratorURL: "https://grafana.example/d/inv?var-table={{ .Labels.table }}&var-role={{ .Labels.role }}"}
}

func TestAlertmanagerGetsFiringThenResolved(t *testing.T) {
	am := amtest.Start(t)
	r := start(t, Config{Alertmanager: amConfig(am.URL)})
	at := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	firing := transition("SensitiveBulkRead", "mallory", model.StateFiring, at)
	r.write(t, firing)
	var got amtest.Alert
	eventually(t, 10*time.Second, "the alert in Alertmanager", func() bool {
		var ok bool
		got, ok = am.Find(t, map[string]string{"alertname": "SensitiveBulkRead", "role": "mallory"})
		return ok
	})
	want := map[string]string{"alertname": "SensitiveBulkRead", "severity": "critical", "table": "public.users",
		"role": "mallory", "columns": "email,password_hash", "source": "statements"}
	for k, v := range want {
		if got.Labels[k] != v {
			t.Errorf("label %s: got %q, want %q", k, got.Labels[k], v)
		}
	}
	if !got.StartsAt.Equal(at) || got.Annotations["summary"] != "Bulk read by mallory" {
		t.Errorf("got startsAt %v summary %q, want %v and the alert's summary", got.StartsAt, got.Annotations["summary"], at)
	}
	if got.GeneratorURL != "https://grafana.example/d/inv?var-table=public.users&var-role=mallory" {
		t.Errorf("generatorURL: got %q", got.GeneratorURL)
	}
	if got.Status.State != "active" || !got.EndsAt.After(time.Now()) {
		t.Errorf("got state %s endsAt %v, want active with endsAt ahead", got.Status.State, got.EndsAt)
	}

	r.write(t, transition("SensitiveBulkRead", "mallory", model.StateResolved, time.Now()))
	eventually(t, 10*time.Second, "the alert resolved in Alertmanager", func() bool {
		_, ok := am.Find(t, map[string]string{"alertname": "SensitiveBulkRead", "role": "mallory"})
		return !ok // Alertmanager lists only alerts whose endsAt is ahead
	})
	eventually(t, 5*time.Second, "the spool empty", func() bool { return r.n.spool.len() == 0 })
}

func TestAlertmanagerOutageLosesNothing(t *testing.T) {
	am := amtest.Start(t)
	r := start(t, Config{Alertmanager: amConfig(am.URL)})
	r.write(t, transition("SensitiveBulkRead", "mallory", model.StateFiring, time.Now()))
	eventually(t, 10*time.Second, "the first alert", func() bool {
		_, ok := am.Find(t, map[string]string{"role": "mallory"})
		return ok
	})

	am.Stop(t)
	r.write(t, transition("SensitiveBulkRead", "eve", model.StateFiring, time.Now()))
	sink := "alertmanager:" + am.URL[len("http://"):]
	eventually(t, 5*time.Second, "failed attempts while Alertmanager is down", func() bool {
		return testutil.ToFloat64(r.n.spool.metrics.failed.WithLabelValues(sink)) >= 2
	})
	if q := testutil.ToFloat64(r.n.spool.metrics.queued.WithLabelValues(sink)); q != 1 {
		t.Fatalf("queued: got %v, want the new alert waiting", q)
	}

	am.StartAgain(t) // a restarted Alertmanager remembers no alert
	eventually(t, 10*time.Second, "both alerts after the restart", func() bool {
		_, eve := am.Find(t, map[string]string{"role": "eve"})
		_, mallory := am.Find(t, map[string]string{"role": "mallory"})
		return eve && mallory // eve's from the spool, mallory's re-sent
	})
}

func TestEveryAlertmanagerOfAPairGetsEveryAlert(t *testing.T) {
	a, b := amtest.Start(t), amtest.Start(t)
	b.Stop(t)
	r := start(t, Config{Alertmanager: amConfig(a.URL, b.URL)})
	r.write(t, transition("SensitiveBulkRead", "mallory", model.StateFiring, time.Now()))
	eventually(t, 10*time.Second, "the alert at the live Alertmanager", func() bool {
		_, ok := a.Find(t, map[string]string{"role": "mallory"})
		return ok
	})
	if r.n.spool.len() != 1 {
		t.Fatalf("spool: got %d entries, want the alert kept for the Alertmanager that is down", r.n.spool.len())
	}
	b.StartAgain(t)
	eventually(t, 10*time.Second, "the alert at the other one", func() bool {
		_, ok := b.Find(t, map[string]string{"role": "mallory"})
		return ok
	})
	eventually(t, 5*time.Second, "the spool empty", func() bool { return r.n.spool.len() == 0 })
}

// receiver is a webhook endpoint that checks every signature and fails on demand.
type receiver struct {
	secret []byte
	mu     sync.Mutex
	fail   int
	bodies [][]byte
	bad    int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !Verify(rc.secret, body, r.Header.Get(SignatureHeader)) || r.Header.Get(DeliveryHeader) == "" {
		rc.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if rc.fail > 0 {
		rc.fail--
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	rc.bodies = append(rc.bodies, body)
}

func (rc *receiver) received() ([][]byte, int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([][]byte(nil), rc.bodies...), rc.bad
}

func TestWebhookSignedAndRetried(t *testing.T) {
	rc := &receiver{secret: []byte("s3cret"), fail: 3}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	r := start(t, Config{Webhooks: []WebhookConfig{{Name: "soc", URL: srv.URL, Secret: []byte("s3cret"), Timeout: time.Second}}})
	a := transition("SensitiveBulkRead", "mallory", model.StateFiring, time.Now())
	r.write(t, a)
	eventually(t, 10*time.Second, "the webhook delivery", func() bool {
		bodies, _ := rc.received()
		return len(bodies) == 1
	})
	eventually(t, 5*time.Second, "the spool empty", func() bool { return r.n.spool.len() == 0 })
	r.stop()
	bodies, bad := rc.received()
	if len(bodies) != 1 || bad != 0 {
		t.Fatalf("got %d bodies and %d bad signatures, want 1 and 0", len(bodies), bad)
	}
	if got := testutil.ToFloat64(r.n.spool.metrics.failed.WithLabelValues("webhook:soc")); got != 3 {
		t.Errorf("failed: got %v, want 3", got)
	}
	if got := testutil.ToFloat64(r.n.spool.metrics.sent.WithLabelValues("webhook:soc")); got != 1 {
		t.Errorf("sent: got %v, want 1", got)
	}
	line, err := os.ReadFile(r.alertLog)
	if err != nil {
		t.Fatal(err)
	}
	if string(bodies[0])+"\n" != string(line) {
		t.Errorf("body: got %s, want the alert log's line %s", bodies[0], line)
	}
}

// A spool that cannot be written (a full disk, for real: a small tmpfs) delays
// delivery and makes the notifier unhealthy, but loses nothing and holds back neither
// the alert log (on another disk) nor the transitions after it.
func TestUnwritableSpoolDelaysButLosesNothing(t *testing.T) {
	rc := &receiver{secret: []byte("k")}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dir := faultfs.Tmpfs(t, 256<<10)
	r := start(t, Config{StateDir: dir, AlertLog: filepath.Join(t.TempDir(), "alerts.jsonl"),
		Webhooks: []WebhookConfig{{Name: "soc", URL: srv.URL, Secret: []byte("k"), Timeout: time.Second}}})
	free := faultfs.Fill(t, dir)
	for _, role := range []string{"r1", "r2"} {
		if _, err := r.n.Exec(t.Context(), Transition{Alert: transition("R", role, model.StateFiring, time.Now())}); err != nil {
			t.Fatalf("Exec: got %v, want nil: what the spool refuses waits in memory", err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	if err := r.n.WaitWritten(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitWritten: got %v, want it to wait while the spool refuses", err)
	}
	if p := r.health.problems(); p[alertSpoolComponent] == "" || p[alertLogComponent] != "" {
		t.Fatalf("got problems %v, want alert_spool only", p)
	}
	if line, _ := os.ReadFile(r.alertLog); strings.Count(string(line), "\n") != 2 {
		t.Fatalf("alert log: got %q, want both lines written while the spool refuses", line)
	}

	free()
	ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := r.n.WaitWritten(ctx); err != nil {
		t.Fatalf("WaitWritten after the spool recovered: %v", err)
	}
	eventually(t, 5*time.Second, "both transitions delivered", func() bool {
		bodies, _ := rc.received()
		return len(bodies) == 2
	})
	bodies, _ := rc.received()
	if !contains(bodies[0], `"role":"r1"`) || !contains(bodies[1], `"role":"r2"`) {
		t.Errorf("got %s, %s, want r1 then r2", bodies[0], bodies[1])
	}
	if p := r.health.problems(); len(p) != 0 {
		t.Errorf("got problems %v after the spool recovered, want none", p)
	}
}

func TestWrongSecretIsRejectedByTheReceiver(t *testing.T) {
	rc := &receiver{secret: []byte("the receiver's secret")}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	r := start(t, Config{Webhooks: []WebhookConfig{{Name: "soc", URL: srv.URL, Secret: []byte("another"), Timeout: time.Second}}})
	r.write(t, transition("R", "x", model.StateFiring, time.Now()))
	eventually(t, 5*time.Second, "a rejected attempt", func() bool { _, bad := rc.received(); return bad > 0 })
	if r.n.spool.len() != 1 {
		t.Fatal("a rejected delivery left the spool: want it kept until acknowledged")
	}
}

func TestSpoolSurvivesARestartAndIsBounded(t *testing.T) {
	dir := t.TempDir()
	rc := &receiver{secret: []byte("k"), fail: 1 << 30} // refuses everything for now
	srv := httptest.NewServer(rc)
	defer srv.Close()
	cfg := Config{StateDir: dir, SpoolMax: 3, Webhooks: []WebhookConfig{{Name: "soc", URL: srv.URL, Secret: []byte("k"), Timeout: time.Second}}}
	r := start(t, cfg)
	for i, role := range []string{"r1", "r2", "r3", "r4", "r5"} {
		r.write(t, transition("R", role, model.StateFiring, time.Unix(int64(i), 0)))
	}
	if got := testutil.ToFloat64(r.n.spool.metrics.dropped.WithLabelValues("webhook:soc")); got != 2 {
		t.Fatalf("dropped: got %v, want the 2 oldest counted", got)
	}
	r.stop()

	// A crash leaves a half-written file and, say, a corrupt one; neither stops delivery.
	spoolDir := filepath.Join(dir, "spool")
	_ = os.WriteFile(filepath.Join(spoolDir, "00000000000000000099.json.123.tmp"), []byte("{"), 0o600)
	_ = os.WriteFile(filepath.Join(spoolDir, "00000000000000000098.json"), []byte("not json"), 0o600)
	rc.mu.Lock()
	rc.fail = 0
	rc.mu.Unlock()
	r2 := start(t, cfg)
	eventually(t, 10*time.Second, "the 3 spooled alerts delivered after the restart", func() bool {
		bodies, _ := rc.received()
		return len(bodies) == 3
	})
	bodies, _ := rc.received()
	for i, role := range []string{"r3", "r4", "r5"} {
		if !contains(bodies[i], `"role":"`+role+`"`) {
			t.Errorf("delivery %d: got %s, want %s's alert, in order", i, bodies[i], role)
		}
	}
	eventually(t, 5*time.Second, "the spool empty", func() bool { return r2.n.spool.len() == 0 })
	if _, err := os.Stat(filepath.Join(spoolDir, "00000000000000000098.json.corrupt")); err != nil {
		t.Errorf("the corrupt entry was not set aside: %v", err)
	}
	if evs := r2.n.Lost(time.Now()); len(evs) != 1 || evs[0].Object != "spool" || evs[0].Rows != 1 {
		t.Errorf("Lost: %+v, want one state_lost event for the spool's one unreadable entry", evs)
	}
}

// An Alertmanager behind TLS and authentication (a reverse proxy, typically): the
// detector must present the credentials and verify the server with the configured CA.
func TestAlertmanagerAuthAndTLS(t *testing.T) {
	tests := []struct {
		name string
		set  func(*AlertmanagerConfig)
		want func(*http.Request) bool
	}{
		{"basic auth", func(c *AlertmanagerConfig) { c.Username, c.Password = "pager", "pw" },
			func(r *http.Request) bool { u, p, ok := r.BasicAuth(); return ok && u == "pager" && p == "pw" }},
		{"bearer token", func(c *AlertmanagerConfig) { c.BearerToken = "tok" },
			func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer tok" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			accepted, refused := 0, 0
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				if r.URL.Path != "/prefix/api/v2/alerts" || !tt.want(r) {
					refused++
					http.Error(w, "no", http.StatusUnauthorized)
					return
				}
				accepted++
			}))
			defer srv.Close()
			pool := x509.NewCertPool()
			pool.AddCert(srv.Certificate())
			cfg := amConfig(srv.URL + "/prefix")
			cfg.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			tt.set(cfg)
			r := start(t, Config{Alertmanager: cfg})
			r.write(t, transition("R", "x", model.StateFiring, time.Now()))
			eventually(t, 5*time.Second, "an accepted delivery", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return accepted > 0
			})
			mu.Lock()
			defer mu.Unlock()
			if refused != 0 {
				t.Errorf("%d requests refused, want every request authenticated", refused)
			}
		})
	}
}

func TestUntrustedCertificateIsNotDeliveredTo(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	r := start(t, Config{Alertmanager: amConfig(srv.URL)}) // no CA: the system roots do not know it
	r.write(t, transition("R", "x", model.StateFiring, time.Now()))
	sink := "alertmanager:" + srv.Listener.Addr().String()
	eventually(t, 5*time.Second, "failed attempts", func() bool {
		return testutil.ToFloat64(r.n.spool.metrics.failed.WithLabelValues(sink)) >= 1
	})
	if r.n.spool.len() != 1 {
		t.Fatal("an alert sent to an unverified server left the spool")
	}
}

// A detection that fires and resolves while Alertmanager is down must still page: its
// resolution is held open long enough for Alertmanager to notify.
func TestFireAndResolveDuringAnOutageStillPages(t *testing.T) {
	am := amtest.Start(t)
	am.Stop(t)
	r := start(t, Config{Alertmanager: amConfig(am.URL)})
	t0 := time.Now()
	r.write(t, transition("SensitiveBulkRead", "mallory", model.StateFiring, t0))
	r.write(t, transition("SensitiveBulkRead", "mallory", model.StateResolved, t0.Add(time.Millisecond)))
	am.StartAgain(t)
	eventually(t, 10*time.Second, "the alert active in Alertmanager for a while", func() bool {
		a, ok := am.Find(t, map[string]string{"role": "mallory"})
		return ok && a.Status.State == "active"
	})
	eventually(t, 10*time.Second, "the alert resolved after the hold", func() bool {
		_, ok := am.Find(t, map[string]string{"role": "mallory"})
		return !ok
	})
}

// Fire, resolve, fire again while Alertmanager is down: every transition keeps its own
// start time, so none is refused (a resolution with startsAt after endsAt is a 400) and
// the queue drains, ending firing.
func TestFlappingAlertDoesNotBlockTheQueue(t *testing.T) {
	am := amtest.Start(t)
	am.Stop(t)
	r := start(t, Config{Alertmanager: amConfig(am.URL)})
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for i, st := range []model.State{model.StateFiring, model.StateResolved, model.StateFiring} {
		r.write(t, transition("SensitiveBulkRead", "mallory", st, t0.Add(time.Duration(i)*10*time.Second)))
	}
	am.StartAgain(t)
	eventually(t, 10*time.Second, "the spool drained", func() bool { return r.n.spool.len() == 0 })
	sink := "alertmanager:" + am.URL[len("http://"):]
	if got := testutil.ToFloat64(r.n.spool.metrics.dropped.WithLabelValues(sink)); got != 0 {
		t.Fatalf("dropped: got %v, want no transition refused", got)
	}
	// Alertmanager merges the overlapping firings into one alert; it must end active.
	time.Sleep(3 * time.Second) // past the resolution's hold: a wrong final state shows
	a, ok := am.Find(t, map[string]string{"role": "mallory"})
	if !ok || a.Status.State != "active" {
		t.Fatalf("got %+v (found %v), want the re-fired alert active", a, ok)
	}
}

// An alert firing when the detector stopped is not re-sent forever after a restart:
// no rule remembers it, so unless one fires it again it resolves after resolve_after.
func TestRestoredAlertResolvesUnlessFiredAgain(t *testing.T) {
	am := amtest.Start(t)
	dir := t.TempDir()
	cfg := Config{StateDir: dir, Alertmanager: amConfig(am.URL), ResolveAfter: 2 * time.Second}
	first := start(t, cfg)
	first.write(t, transition("SensitiveBulkRead", "mallory", model.StateFiring, time.Now()))
	first.write(t, transition("SensitiveBulkRead", "eve", model.StateFiring, time.Now()))
	eventually(t, 10*time.Second, "both alerts delivered", func() bool { return first.n.spool.len() == 0 })
	first.stop()

	second := start(t, cfg)
	// eve's read happens again after the restart; mallory's does not.
	second.write(t, transition("SensitiveBulkRead", "eve", model.StateFiring, time.Now()))
	eventually(t, 15*time.Second, "mallory's restored alert resolved", func() bool {
		_, ok := am.Find(t, map[string]string{"role": "mallory"})
		return !ok
	})
	if _, ok := am.Find(t, map[string]string{"role": "eve"}); !ok {
		t.Fatal("eve's alert, fired again after the restart, was resolved too")
	}
}

// The spool's file format outlives a release: an entry written by an earlier version
// (this one's, verbatim) is delivered after an upgrade.
func TestSpooledEntryOfAnEarlierVersionIsDelivered(t *testing.T) {
	rc := &receiver{secret: []byte("k")}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dir := t.TempDir()
	const old = `{"seq":7,"enqueued":"2026-11-29T06:00:01Z","alert":{"time":"2026-11-29T06:00:00Z",` +
		`"state":"firing","rule":"SensitiveBulkRead","severity":"critical","fingerprint":"0123456789abcdef",` +
		`"value":50000,"labels":{"role":"mallory","table":"public.users"},"annotations":{"summary":"s"}},` +
		`"starts_at":"2026-11-29T06:00:00Z","pending":["webhook:soc"]}`
	if err := os.MkdirAll(filepath.Join(dir, "spool"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "spool", "00000000000000000007.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{StateDir: dir, Webhooks: []WebhookConfig{{Name: "soc", URL: srv.URL, Secret: []byte("k"), Timeout: time.Second}}})
	eventually(t, 5*time.Second, "the earlier version's entry delivered", func() bool {
		bodies, _ := rc.received()
		return len(bodies) == 1 && contains(bodies[0], `"fingerprint":"0123456789abcdef"`) && contains(bodies[0], `"role":"mallory"`)
	})
	r.write(t, transition("R", "eve", model.StateFiring, time.Now()))
	eventually(t, 5*time.Second, "the next transition after it", func() bool {
		bodies, _ := rc.received()
		return len(bodies) == 2 && contains(bodies[1], `"role":"eve"`)
	})
}
