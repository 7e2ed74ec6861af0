package alert

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Log writes alert transitions as JSON lines to a file and, optionally, to stdout.
// Each line is synced to disk before Write returns, so a transition that Write
// acknowledged survives a crash. A Log is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	file    *os.File
	stdout  io.Writer
	metrics *logMetrics
}

type logMetrics struct {
	alerts *prometheus.CounterVec
	lines  *prometheus.CounterVec
}

// OpenLog opens (appending, creating it and its directory when missing) the alert log
// at path. stdout may be nil to write to the file only.
func OpenLog(path string, stdout io.Writer, reg prometheus.Registerer) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open alert log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open alert log: %w", err)
	}
	f2 := promauto.With(reg)
	return &Log{
		file:   f,
		stdout: stdout,
		metrics: &logMetrics{
			alerts: f2.NewCounterVec(prometheus.CounterOpts{
				Name: "pgtripwire_alerts_total",
				Help: "Alerts that started firing, by rule and severity.",
			}, []string{"rule", "severity"}),
			lines: f2.NewCounterVec(prometheus.CounterOpts{
				Name: "pgtripwire_alert_transitions_total",
				Help: "Alert transitions written to the alert log, by state.",
			}, []string{"state"}),
		},
	}, nil
}

// PrecreateRule makes the rule's pgtripwire_alerts_total series exist at zero, so that
// dashboards and rate() see it before its first alert.
func (l *Log) PrecreateRule(rule string, severity Severity) {
	l.metrics.alerts.WithLabelValues(rule, string(severity))
}

// Write appends one transition. It returns an error when the file write or sync
// fails; stdout is best effort (a closed pipe must not stop alerting to the file).
func (l *Log) Write(a Alert) error {
	line, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode alert %s: %w", a.Fingerprint, err)
	}
	line = append(line, '\n')

	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.file.Write(line); err != nil {
		return fmt.Errorf("write alert log: %w", err)
	}
	if err := l.file.Sync(); err != nil {
		return fmt.Errorf("sync alert log: %w", err)
	}
	if l.stdout != nil {
		_, _ = l.stdout.Write(line)
	}
	if a.State == StateFiring {
		l.metrics.alerts.WithLabelValues(a.Rule, string(a.Severity)).Inc()
	}
	l.metrics.lines.WithLabelValues(string(a.State)).Inc()
	return nil
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.file.Close()
}
