package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	promauto.With(reg).NewCounter(prometheus.CounterOpts{Name: "pgtripwire_test_total", Help: "h"}).Inc()
	ready, problems := false, map[string]string{"statements": "connection refused"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, Handler(reg, func() (bool, map[string]string) { return ready, problems }), Options{})
	}()
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: got %d, want 200", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "pgtripwire_test_total 1") {
		t.Errorf("/metrics: got %d %q, want 200 with the registry's metrics", code, body)
	}
	code, body := get("/readyz")
	var got struct {
		Status   string
		Problems map[string]string
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if code != 503 || got.Status != "unready" || got.Problems["statements"] != "connection refused" {
		t.Errorf("/readyz unready: got %d %q, want 503 with the problem", code, body)
	}
	ready, problems = true, nil
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz ready: got %d, want 200", code)
	}

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve: got %v, want context.Canceled after a clean shutdown", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

// Clients that hold connections open — idle keep-alives, or many at once — cost the
// detector a bounded number of connections: beyond the bound a new client waits, and
// an idle connection is closed after the idle timeout, which lets it in.
func TestConnectionsAreBoundedAndIdleOnesClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	lim := &limits{readHeader: time.Second, read: time.Second, write: time.Second, idle: 300 * time.Millisecond, connections: 2}
	go func() {
		done <- Serve(ctx, ln, Handler(prometheus.NewRegistry(), func() (bool, map[string]string) { return true, nil }),
			Options{limits: lim})
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: got %v, want context.Canceled", err)
		}
	}()
	url := "http://" + ln.Addr().String() + "/healthz"
	// Two clients, each keeping its connection alive after a request: the bound.
	var holders []*http.Client
	for range 2 {
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		holders = append(holders, c)
	}
	defer func() {
		for _, c := range holders {
			c.CloseIdleConnections()
		}
	}()
	// A third client is served only once the server closed an idle connection.
	start := time.Now()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("third client: %v", err)
	}
	resp.Body.Close()
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("third client served after %v, want it to wait for an idle connection to close (bound 2)", waited)
	}
}
