package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgtripwire/pgtripwire/detector/source/statements"
	"github.com/pgtripwire/pgtripwire/model"
)

// watch reads what the detector decided: the alert log (the record of every transition)
// and its metrics, gathered from the registry /metrics serves.
type watch struct {
	alertLog string
	registry *prometheus.Registry
}

// errDeadline is returned by pollUntil when cond did not hold in time.
var errDeadline = errors.New("deadline passed")

// pollUntil calls cond every 100 ms until it returns true, an error, ctx ends or timeout
// passes (errDeadline).
func pollUntil(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok, err := cond(); err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errDeadline
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// firing returns every firing transition in the alert log, in order.
func (w *watch) firing() ([]model.Alert, error) {
	f, err := os.Open(w.alertLog)
	if err != nil {
		return nil, fmt.Errorf("read alert log: %w", err)
	}
	defer f.Close()
	var firing []model.Alert
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var a model.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return nil, fmt.Errorf("read alert log: a line is not JSON: %w", err)
		}
		if a.State == model.StateFiring {
			firing = append(firing, a)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read alert log: %w", err)
	}
	return firing, nil
}

// rowsRead is pgtripwire_sensitive_rows_read_total summed over the series of role.
func (w *watch) rowsRead(role string) (float64, error) {
	families, err := w.registry.Gather()
	if err != nil {
		return 0, fmt.Errorf("gather metrics: %w", err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != "pgtripwire_sensitive_rows_read_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "role" && l.GetValue() == role {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum, nil
}

// polls is how many polls of pg_stat_statements have finished, events handed over and
// alerts written included.
func (w *watch) polls() (uint64, error) {
	families, err := w.registry.Gather()
	if err != nil {
		return 0, fmt.Errorf("gather metrics: %w", err)
	}
	for _, f := range families {
		if f.GetName() != "pgtripwire_source_polls_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == statements.Name {
					return uint64(m.GetCounter().GetValue()), nil
				}
			}
		}
	}
	return 0, nil
}

// judgement tracks whether the detector has judged some reads: it has counted at least
// want[role] sensitive rows for every role and then finished one more poll. By then
// whatever those rows raise is in the alert log, so the absence of an alert is a
// verdict, not a delay.
type judgement struct {
	want    map[string]float64
	counted *uint64 // polls finished when every row had been counted
}

// done reports whether the reads are judged. Read the alert log after it says so,
// not before: the judging poll may have written to it just now.
func (j *judgement) done(w *watch) (bool, error) {
	// Polls are read before rows: the poll that counts the rows finishes after counting
	// them, so the next finished poll is that one or a later one.
	polls, err := w.polls()
	if err != nil {
		return false, err
	}
	if j.counted != nil {
		return polls > *j.counted, nil
	}
	for role, rows := range j.want {
		got, err := w.rowsRead(role)
		if err != nil || got < rows {
			return false, err
		}
	}
	j.counted = &polls
	return false, nil
}

// judged waits until the detector has judged the reads of want (see judgement); it
// returns errDeadline when that does not happen within timeout.
func (w *watch) judged(ctx context.Context, want map[string]float64, timeout time.Duration) error {
	j := &judgement{want: want}
	return pollUntil(ctx, timeout, func() (bool, error) { return j.done(w) })
}

// verdict waits for the detector to judge role's read of at least rows sensitive rows:
// it returns the role's first firing alert as soon as it is in the alert log, or
// ok=false once the read is judged without one, or once timeout passes.
func (w *watch) verdict(ctx context.Context, role string, rows float64, timeout time.Duration) (a model.Alert, ok bool, err error) {
	j := &judgement{want: map[string]float64{role: rows}}
	err = pollUntil(ctx, timeout, func() (bool, error) {
		judged, err := j.done(w)
		if err != nil {
			return false, err
		}
		firing, err := w.firing()
		if err != nil {
			return false, err
		}
		for _, f := range firing {
			if f.Labels[model.LabelRole] == role {
				a, ok = f, true
				return true, nil
			}
		}
		return judged, nil
	})
	if errors.Is(err, errDeadline) {
		err = nil
	}
	return a, ok, err
}

// alertPrinter turns the detector's JSON alert lines into lines a person reads as they
// fire. A line that does not decode is passed through as it is: nothing is hidden.
type alertPrinter struct {
	mu      sync.Mutex
	out     io.Writer
	partial []byte
}

func (p *alertPrinter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			return len(b), nil
		}
		p.printLocked(p.partial[:i])
		p.partial = p.partial[i+1:]
	}
}

func (p *alertPrinter) printLocked(line []byte) {
	var a model.Alert
	if err := json.Unmarshal(line, &a); err != nil || a.Rule == "" {
		fmt.Fprintf(p.out, "ALERT %s\n", line)
		return
	}
	fmt.Fprintf(p.out, "%s %s %s %s %s: value %s\n", strings.ToUpper(string(a.State)),
		a.Time.Local().Format("15:04:05.000"), strings.ToUpper(string(a.Severity)), a.Rule,
		orUnknown(a.Labels[model.LabelRole]), thousands(int64(a.Value)))
	if s := a.Annotations[model.AnnotationSummary]; s != "" {
		fmt.Fprintf(p.out, "        %s\n", s)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown role)"
	}
	return s
}

// thousands formats n with comma separators: 100000 → "100,000".
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func waitReady(ctx context.Context, url string, timeout time.Duration) error {
	err := pollUntil(ctx, timeout, func() (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if errors.Is(err, errDeadline) {
		return fmt.Errorf("detector not ready after %s", timeout)
	}
	return err
}

// syncWriter serialises writes to w: the narration and the detector's alert lines share
// the output.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
