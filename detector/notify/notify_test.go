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
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/internal/testkit/amtest"
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
	n    *Notifier
	reg  *prometheus.Registry
	stop func()
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	cfg.RetryInitial, cfg.RetryMax = 50*time.Millisecond, 300*time.Millisecond
	reg := prometheus.NewRegistry()
	n, err := New(cfg, zap.NewNop(), reg)
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
	}
	t.Cleanup(stop)
	return &running{n: n, reg: reg, stop: stop}
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
	if err := r.n.Write(firing); err != nil {
		t.Fatal(err)
	}
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

	if err := r.n.Write(transition("SensitiveBulkRead", "mallory", model.StateResolved, time.Now())); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the alert resolved in Alertmanager", func() bool {
		_, ok := am.Find(t, map[string]string{"alertname": "SensitiveBulkRead", "role": "mallory"})
		return !ok // Alertmanager lists only alerts whose endsAt is ahead
	})
	eventually(t, 5*time.Second, "the spool empty", func() bool { return r.n.spool.len() == 0 })
}

func TestAlertmanagerOutageLosesNothing(t *testing.T) {
	am := amtest.Start(t)
	r := start(t, Config{Alertmanager: amConfig(am.URL)})
	if err := r.n.Write(transition("SensitiveBulkRead", "mallory", model.StateFiring, time.Now())); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the first alert", func() bool {
		_, ok := am.Find(t, map[string]string{"role": "mallory"})
		return ok
	})

	am.Stop(t)
	if err := r.n.Write(transition("SensitiveBulkRead", "eve", model.StateFiring, time.Now())); err != nil {
		t.Fatal(err)
	}
	sink := "alertmanager:" + am.URL[len("http://"):]
	eventually(t, 5*time.Second, "failed attempts while Alertmanager is down", func() bool {
		return testutil.ToFloat64(r.n.metrics.failed.WithLabelValues(sink)) >= 2
	})
	if q := testutil.ToFloat64(r.n.metrics.queued.WithLabelValues(sink)); q != 1 {
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
	if err := r.n.Write(transition("SensitiveBulkRead", "mallory", model.StateFiring, time.Now())); err != nil {
		t.Fatal(err)
	}
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
	if err := r.n.Write(a); err != nil {
		t.Fatal(err)
	}
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
	if got := testutil.ToFloat64(r.n.metrics.failed.WithLabelValues("webhook:soc")); got != 3 {
		t.Errorf("failed: got %v, want 3", got)
	}
	if got := testutil.ToFloat64(r.n.metrics.sent.WithLabelValues("webhook:soc")); got != 1 {
		t.Errorf("sent: got %v, want 1", got)
	}
	wantBody, _ := jsonOf(a)
	if string(bodies[0]) != string(wantBody) {
		t.Errorf("body: got %s, want the alert line %s", bodies[0], wantBody)
	}
}

func TestWrongSecretIsRejectedByTheReceiver(t *testing.T) {
	rc := &receiver{secret: []byte("the receiver's secret")}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	r := start(t, Config{Webhooks: []WebhookConfig{{Name: "soc", URL: srv.URL, Secret: []byte("another"), Timeout: time.Second}}})
	if err := r.n.Write(transition("R", "x", model.StateFiring, time.Now())); err != nil {
		t.Fatal(err)
	}
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
		if err := r.n.Write(transition("R", role, model.StateFiring, time.Unix(int64(i), 0))); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(r.n.metrics.dropped.WithLabelValues("webhook:soc")); got != 2 {
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
			if err := r.n.Write(transition("R", "x", model.StateFiring, time.Now())); err != nil {
				t.Fatal(err)
			}
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
	if err := r.n.Write(transition("R", "x", model.StateFiring, time.Now())); err != nil {
		t.Fatal(err)
	}
	sink := "alertmanager:" + srv.Listener.Addr().String()
	eventually(t, 5*time.Second, "failed attempts", func() bool {
		return testutil.ToFloat64(r.n.metrics.failed.WithLabelValues(sink)) >= 1
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
	if err := r.n.Write(transition("SensitiveBulkRead", "mallory", model.StateFiring, t0)); err != nil {
		t.Fatal(err)
	}
	if err := r.n.Write(transition("SensitiveBulkRead", "mallory", model.StateResolved, t0.Add(time.Millisecond))); err != nil {
		t.Fatal(err)
	}
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
		if err := r.n.Write(transition("SensitiveBulkRead", "mallory", st, t0.Add(time.Duration(i)*10*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	am.StartAgain(t)
	eventually(t, 10*time.Second, "the spool drained", func() bool { return r.n.spool.len() == 0 })
	sink := "alertmanager:" + am.URL[len("http://"):]
	if got := testutil.ToFloat64(r.n.metrics.dropped.WithLabelValues(sink)); got != 0 {
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
	if err := first.n.Write(transition("SensitiveBulkRead", "mallory", model.StateFiring, time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := first.n.Write(transition("SensitiveBulkRead", "eve", model.StateFiring, time.Now())); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both alerts delivered", func() bool { return first.n.spool.len() == 0 })
	first.stop()

	second := start(t, cfg)
	// eve's read happens again after the restart; mallory's does not.
	if err := second.n.Write(transition("SensitiveBulkRead", "eve", model.StateFiring, time.Now())); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "mallory's restored alert resolved", func() bool {
		_, ok := am.Find(t, map[string]string{"role": "mallory"})
		return !ok
	})
	if _, ok := am.Find(t, map[string]string{"role": "eve"}); !ok {
		t.Fatal("eve's alert, fired again after the restart, was resolved too")
	}
}
