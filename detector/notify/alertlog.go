package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/pgtripwire/pgtripwire/model"
)

// AlertLog is the Sink that writes alert transitions as JSON lines to a file and,
// optionally, to stdout. Each line is synced to disk before Send returns, so a
// transition that Send acknowledged survives a crash; a write that fails is cut off
// again, so a retry never appends after a torn line. Stdout is fed by its own goroutine
// through a buffer: a stalled reader of stdout must not stall detection, so lines it
// cannot take are dropped and counted, never the file's. An AlertLog is safe for
// concurrent use; Close stops the stdout goroutine.
type AlertLog struct {
	path    string
	mu      sync.Mutex
	file    *os.File
	size    int64 // length of the file up to its last complete line, as last seen
	metrics *logMetrics

	stdout     chan []byte // nil without stdout
	stdoutDone chan struct{}
}

type logMetrics struct {
	alerts        *prometheus.CounterVec
	firing        *prometheus.GaugeVec
	lines         *prometheus.CounterVec
	stdoutDropped prometheus.Counter
}

// stdoutBuffer is how many lines may wait for a slow stdout reader.
const stdoutBuffer = 1024

// openAlertLog opens (appending, creating it and its directory when missing) the alert log
// at path. stdout may be nil to write to the file only.
func openAlertLog(path string, stdout io.Writer, reg prometheus.Registerer) (*AlertLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("open alert log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open alert log: %w", err)
	}
	size, err := endLastLine(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open alert log: %w", err)
	}
	f2 := promauto.With(reg)
	l := &AlertLog{
		path: path,
		file: f,
		size: size,
		metrics: &logMetrics{
			alerts: f2.NewCounterVec(prometheus.CounterOpts{
				Name: "pgtripwire_alerts_total",
				Help: "Alerts that started firing, by rule and severity.",
			}, []string{"rule", "severity"}),
			firing: f2.NewGaugeVec(prometheus.GaugeOpts{
				Name: "pgtripwire_alerts_firing",
				Help: "Alerts firing now, by rule and severity (restored alerts included after a restart).",
			}, []string{"rule", "severity"}),
			lines: f2.NewCounterVec(prometheus.CounterOpts{
				Name: "pgtripwire_alert_transitions_total",
				Help: "Alert transitions written to the alert log, by state.",
			}, []string{"state"}),
			stdoutDropped: f2.NewCounter(prometheus.CounterOpts{
				Name: "pgtripwire_alert_stdout_dropped_total",
				Help: "Alert lines not copied to stdout because its reader was too slow (the file has them).",
			}),
		},
	}
	if stdout != nil {
		l.stdout, l.stdoutDone = make(chan []byte, stdoutBuffer), make(chan struct{})
		go func() {
			defer close(l.stdoutDone)
			for line := range l.stdout {
				_, _ = stdout.Write(line) // best effort: the file is the record
			}
		}()
	}
	return l, nil
}

// endLastLine returns the file's size after making sure it ends with a newline: a line
// torn by a crash stays on a line of its own instead of corrupting the next one.
func endLastLine(f *os.File) (int64, error) {
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := info.Size()
	if size == 0 || !info.Mode().IsRegular() {
		return size, nil
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		return 0, err
	}
	if last[0] == '\n' {
		return size, nil
	}
	if _, err := f.Write([]byte{'\n'}); err != nil {
		return 0, err
	}
	return size + 1, nil
}

// PrecreateRule makes the rule's pgtripwire_alerts_total series exist at zero, so that
// dashboards and rate() see it before its first alert.
func (l *AlertLog) PrecreateRule(rule string, severity model.Severity) {
	l.metrics.alerts.WithLabelValues(rule, string(severity))
	l.metrics.firing.WithLabelValues(rule, string(severity))
}

// Restored counts an alert that was firing before a restart, restored by the rule
// engine from its state: it has no new firing line, but it is firing now.
func (l *AlertLog) Restored(a model.Alert) {
	l.metrics.firing.WithLabelValues(a.Rule, string(a.Severity)).Inc()
}

// Name implements Sink.
func (l *AlertLog) Name() string { return alertLogComponent }

// Send implements Sink: it appends the transition's alert line and syncs the file. It
// returns an error when the write or the sync fails; stdout is best effort (a closed
// pipe must not stop alerting to the file).
func (l *AlertLog) Send(_ context.Context, t Transition) error {
	a := t.Alert
	line, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode alert %s: %w", a.Fingerprint, err)
	}
	line = append(line, '\n')

	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.appendLocked(line); err != nil {
		return err
	}
	if l.stdout != nil {
		select {
		case l.stdout <- line:
		default:
			l.metrics.stdoutDropped.Inc()
		}
	}
	switch a.State {
	case model.StateFiring:
		l.metrics.alerts.WithLabelValues(a.Rule, string(a.Severity)).Inc()
		l.metrics.firing.WithLabelValues(a.Rule, string(a.Severity)).Inc()
	case model.StateResolved:
		l.metrics.firing.WithLabelValues(a.Rule, string(a.Severity)).Dec()
	}
	l.metrics.lines.WithLabelValues(string(a.State)).Inc()
	return nil
}

// appendLocked writes and syncs one line, or cuts the file back to its last complete
// line and returns the error. Where the line starts is read from the file itself, not
// remembered: a rotation by copytruncate empties the file behind the detector's back,
// and cutting back to a remembered size would then fill the file with zeros.
func (l *AlertLog) appendLocked(line []byte) error {
	start := l.size
	if info, err := l.file.Stat(); err == nil {
		start = info.Size()
	}
	_, err := l.file.Write(line) // O_APPEND: at the end, wherever it is now
	if err == nil {
		err = l.file.Sync()
	}
	if err != nil {
		// Best effort: on a full disk the truncation frees what the write took. Never
		// beyond the file's end: Truncate would extend it with zeros.
		if info, serr := l.file.Stat(); serr == nil && info.Size() > start {
			_ = l.file.Truncate(start)
		}
		return fmt.Errorf("write alert log: %w", err)
	}
	l.size = start + int64(len(line))
	return nil
}

// Reopen closes the alert log and opens its path again (creating it when it was
// moved away): after a rotation by rename (logrotate's default), lines go to the new
// file. SIGHUP calls it. On error the log keeps writing to the file it had open.
func (l *AlertLog) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("reopen alert log: %w", err)
	}
	size, err := endLastLine(f)
	if err != nil {
		f.Close()
		return fmt.Errorf("reopen alert log: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.file
	l.file, l.size = f, size
	return old.Close()
}

// Close waits for stdout to take the lines already queued, then closes the file.
func (l *AlertLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stdout != nil {
		close(l.stdout)
		<-l.stdoutDone
		l.stdout = nil
	}
	return l.file.Close()
}
