package notify

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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
func (l *AlertLog) Send(ctx context.Context, t Transition) error {
	_, err := l.Exec(ctx, t)
	return err
}

// Exec is the alert log as a stage that takes a batch whole or not at all: every
// transition's line appended with one write and one sync, or, on error, none (the file
// is cut back to where the batch started). An alert storm costs a sync per batch, not
// per line.
func (l *AlertLog) Exec(_ context.Context, ts ...Transition) ([]Transition, error) {
	var lines []byte
	ends := make([]int, 0, len(ts))
	for _, t := range ts {
		a := t.Alert
		line, err := json.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("encode alert %s: %w", a.Fingerprint, err)
		}
		lines = append(append(lines, line...), '\n')
		ends = append(ends, len(lines))
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.appendLocked(lines); err != nil {
		return nil, err
	}
	start := 0
	for i, t := range ts {
		a := t.Alert
		if l.stdout != nil {
			select {
			case l.stdout <- lines[start:ends[i]]:
			default:
				l.metrics.stdoutDropped.Inc()
			}
		}
		start = ends[i]
		switch a.State {
		case model.StateFiring:
			l.metrics.alerts.WithLabelValues(a.Rule, string(a.Severity)).Inc()
			l.metrics.firing.WithLabelValues(a.Rule, string(a.Severity)).Inc()
		case model.StateResolved:
			l.metrics.firing.WithLabelValues(a.Rule, string(a.Severity)).Dec()
		}
		l.metrics.lines.WithLabelValues(string(a.State)).Inc()
	}
	return ts, nil
}

// appendLocked writes and syncs lines, or cuts the file back to its last complete
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

// ReadAlertLogStates reads the alert log file at path and returns each alert's last
// line, by fingerprint: what the log says is firing or resolved. A torn last line (a
// crash mid-write) and lines that are not alerts are skipped and counted in skipped.
// The detector compares it with the rule state at start, so that a restart after a
// lost or stale state neither leaves an alert firing forever nor fires it twice.
func ReadAlertLogStates(path string) (last map[string]model.Alert, skipped int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	last = make(map[string]model.Alert)
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, rerr := r.ReadBytes('\n')
		if len(line) > 0 {
			var a model.Alert
			if line[len(line)-1] != '\n' || json.Unmarshal(line, &a) != nil || a.Fingerprint == "" ||
				(a.State != model.StateFiring && a.State != model.StateResolved) {
				skipped++
			} else {
				last[a.Fingerprint] = a
			}
		}
		if errors.Is(rerr, io.EOF) {
			return last, skipped, nil
		}
		if rerr != nil {
			return nil, 0, fmt.Errorf("read alert log %s: %w", path, rerr)
		}
	}
}
