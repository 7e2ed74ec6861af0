// Package web serves the detector's HTTP endpoints: /metrics for Prometheus, /healthz
// (the process answers) and /readyz (connected and every enabled source healthy),
// optionally behind a Prometheus web configuration file (TLS, client certificates,
// bcrypt basic auth), read by exporter-toolkit exactly as Prometheus' own exporters
// read it.
//
// It is not an API for alerts or configuration: the detector adds the evidence
// endpoint (/api/v1/evidence) to the mux Handler returns, behind the same protection.
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
	toolkit "github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"
)

// ReadyFunc reports readiness and, when unready, why, per component.
type ReadyFunc func() (ready bool, problems map[string]string)

// Handler returns the endpoints' mux, to which the caller may add its own.
func Handler(gatherer prometheus.Gatherer, ready ReadyFunc) *http.ServeMux {
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

// Options are how Serve protects the endpoints. The zero value serves plain HTTP
// without authentication.
type Options struct {
	// WebConfigFile is the path of a Prometheus web configuration file
	// (https://prometheus.io/docs/prometheus/latest/configuration/https/):
	// tls_server_config, basic_auth_users (bcrypt hashes), http_server_config.
	// "" serves plain HTTP. The file is read again on every request and TLS
	// handshake, as exporter-toolkit does, so certificates and users can be
	// rotated without a restart.
	WebConfigFile string
	// Logger receives exporter-toolkit's messages (TLS on or off, a file that
	// became unreadable); nil discards them.
	Logger *zap.Logger

	// limits overrides the package's limits; tests shrink them.
	limits *limits
}

// limits are the HTTP server's bounds.
type limits struct {
	readHeader, read, write, idle time.Duration
	connections                   int
}

// ValidateConfigFile reads a web configuration file and the certificates it
// names, and reports the first problem; "" is valid (plain HTTP). Call it
// before Serve so that a bad file stops the detector at start, not at the first
// scrape.
func ValidateConfigFile(path string) error {
	if path == "" {
		return nil
	}
	if err := toolkit.Validate(path); err != nil {
		return fmt.Errorf("web config file %s: %w", path, err)
	}
	return nil
}

// Limits of the HTTP server: its clients are Prometheus, probes and on-call engineers,
// never many at once, so a client that holds connections open (slowly, or idle, or by
// the thousand) must not cost the detector file descriptors and memory without bound.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	// writeTimeout leaves a scrape of a large registry time to finish.
	writeTimeout = time.Minute
	idleTimeout  = 2 * time.Minute
	// maxConnections bounds the open connections; a client beyond it waits for one to
	// close (Prometheus keeps one alive per scrape target).
	maxConnections = 64
)

// Serve serves h on ln until ctx is done, then shuts down gracefully (in-flight
// scrapes get up to 5 s). With opts.WebConfigFile it serves TLS and/or requires
// basic auth as the file says; every endpoint is behind it, /healthz included. It
// holds at most maxConnections open at once and closes idle and slow ones. It
// returns ctx's error after a clean shutdown.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, opts Options) error {
	lim := limits{readHeader: readHeaderTimeout, read: readTimeout, write: writeTimeout, idle: idleTimeout,
		connections: maxConnections}
	if opts.limits != nil {
		lim = *opts.limits
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: lim.readHeader, ReadTimeout: lim.read,
		WriteTimeout: lim.write, IdleTimeout: lim.idle}
	ln = netutil.LimitListener(ln, lim.connections)
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	webConfig := opts.WebConfigFile
	flags := &toolkit.FlagConfig{WebConfigFile: &webConfig}
	errc := make(chan error, 1)
	go func() { errc <- toolkit.Serve(ln, srv, flags, newSlogger(log.Named("http"))) }()
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
