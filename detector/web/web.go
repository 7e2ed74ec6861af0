// Package web serves the detector's HTTP endpoints: /metrics for Prometheus, /healthz
// (the process answers) and /readyz (connected and every enabled source healthy).
//
// It is not an API for alerts or configuration.
package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyFunc reports readiness and, when unready, why, per component.
type ReadyFunc func() (ready bool, problems map[string]string)

// Handler returns the endpoints' mux.
func Handler(gatherer prometheus.Gatherer, ready ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, problems := ready()
		body := struct {
			Status   string            `json:"status"`
			Problems map[string]string `json:"problems,omitempty"`
		}{Status: "ready", Problems: problems}
		code := http.StatusOK
		if !ok {
			body.Status, code = "unready", http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
	return mux
}

// Serve serves h on ln until ctx is done, then shuts down gracefully (in-flight
// scrapes get up to 5 s). It returns ctx's error after a clean shutdown.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// A scrape still running after 5 s is cut off: stopping was asked for, and a
		// slow client must not turn a clean stop into a failure.
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return ctx.Err()
}
