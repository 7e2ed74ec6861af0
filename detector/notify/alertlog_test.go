package notify

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/internal/testkit/faultfs"
	"github.com/pgtripwire/pgtripwire/model"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestLogWritesOneLinePerTransition(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "alerts.jsonl")
	var stdout bytes.Buffer
	reg := prometheus.NewRegistry()
	l, err := openAlertLog(path, &stdout, reg)
	if err != nil {
		t.Fatal(err)
	}
	l.PrecreateRule("Quiet", model.SeverityInfo)
	at := time.Date(2026, 11, 29, 6, 0, 0, 123, time.UTC)
	labels := map[string]string{model.LabelTable: "public.users", model.LabelRole: "mallory"}
	firing := model.Alert{Time: at, State: model.StateFiring, Rule: "SensitiveBulkRead", Severity: model.SeverityCritical,
		Fingerprint: model.Fingerprint("SensitiveBulkRead", labels), Value: 50000, Labels: labels,
		Annotations: map[string]string{model.AnnotationSummary: "s"}}
	resolved := firing
	resolved.State, resolved.Time = model.StateResolved, at.Add(time.Minute)
	for _, a := range []model.Alert{firing, resolved} {
		if err := send(l, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, stdout.Bytes()) {
		t.Fatalf("stdout and file differ:\nfile:   %s\nstdout: %s", data, stdout.Bytes())
	}
	var got []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		got = append(got, m)
	}
	if len(got) != 2 {
		t.Fatalf("got %d lines, want 2", len(got))
	}
	if got[0]["state"] != "firing" || got[1]["state"] != "resolved" {
		t.Fatalf("got states %v, %v, want firing, resolved", got[0]["state"], got[1]["state"])
	}
	if got[0]["time"] != "2026-11-29T06:00:00.000000123Z" || got[0]["value"] != 50000.0 {
		t.Fatalf("got time %v value %v, want RFC3339Nano time and value 50000", got[0]["time"], got[0]["value"])
	}
	for _, key := range []string{"rule", "severity", "fingerprint", "labels", "annotations"} {
		if _, ok := got[0][key]; !ok {
			t.Errorf("line lacks %q", key)
		}
	}
	if v := testutil.ToFloat64(l.metrics.alerts.WithLabelValues("SensitiveBulkRead", "critical")); v != 1 {
		t.Fatalf("pgtripwire_alerts_total: got %v, want 1 (firing only)", v)
	}
	if n := testutil.CollectAndCount(l.metrics.alerts); n != 2 {
		t.Fatalf("got %d alerts_total series, want 2 (one precreated)", n)
	}
}

func TestOpenLogReportsUnwritablePath(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openAlertLog(filepath.Join(blocker, "alerts.jsonl"), nil, prometheus.NewRegistry()); err == nil {
		t.Fatal("got nil error for a path under a regular file, want one")
	}
}

func testAlert(i int) model.Alert {
	labels := map[string]string{model.LabelRole: fmt.Sprintf("r%d", i)}
	return model.Alert{Time: time.Unix(0, 0).UTC(), State: model.StateFiring, Rule: "R", Severity: model.SeverityInfo,
		Fingerprint: model.Fingerprint("R", labels), Labels: labels}
}

func TestOpenLogKeepsATornLineApart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	if err := os.WriteFile(path, []byte(`{"time":"2026-11-29T0`), 0o600); err != nil { // a crash mid-line
		t.Fatal(err)
	}
	l, err := openAlertLog(path, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := send(l, testAlert(1)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 || !json.Valid([]byte(lines[1])) {
		t.Fatalf("got %q, want the torn fragment on its own line and a valid line after it", data)
	}
}

func TestSlowStdoutDoesNotBlockAlerts(t *testing.T) {
	blocked := &blockingWriter{release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	path := filepath.Join(t.TempDir(), "alerts.jsonl")
	l, err := openAlertLog(path, blocked, reg)
	if err != nil {
		t.Fatal(err)
	}
	const n = stdoutBuffer + 100
	for i := range n {
		if err := send(l, testAlert(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(l.metrics.stdoutDropped); got < 99 {
		t.Errorf("stdout dropped: got %v, want the lines beyond the buffer counted", got)
	}
	close(blocked.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if got := strings.Count(string(data), "\n"); got != n {
		t.Fatalf("file has %d lines, want all %d whatever stdout does", got, n)
	}
}

type blockingWriter struct{ release chan struct{} }

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return len(p), nil
}

func TestWriteReportsAFullDisk(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full on this system")
	}
	reg := prometheus.NewRegistry()
	l, err := openAlertLog("/dev/full", nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := send(l, testAlert(1)); err == nil {
		t.Fatal("got nil writing to a full device, want the error")
	}
	if got := testutil.ToFloat64(l.metrics.alerts.WithLabelValues("R", "info")); got != 0 {
		t.Fatalf("pgtripwire_alerts_total: got %v for an alert that was not written, want 0", got)
	}
}

func TestFiringGaugeFollowsTransitions(t *testing.T) {
	reg := prometheus.NewRegistry()
	l, err := openAlertLog(filepath.Join(t.TempDir(), "alerts.jsonl"), nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, b := testAlert(1), testAlert(2)
	for _, tr := range []model.Alert{a, b} {
		if err := send(l, tr); err != nil {
			t.Fatal(err)
		}
	}
	a.State = model.StateResolved
	if err := send(l, a); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(l.metrics.firing.WithLabelValues("R", "info")); got != 1 {
		t.Fatalf("pgtripwire_alerts_firing: got %v, want 1 (two fired, one resolved)", got)
	}
}

// logrotate's copytruncate empties the alert log behind the detector's back; a write that
// then fails (the disk is full) must not cut the file back to the size it had before
// the rotation, which would fill it with zeros. The next write is a clean first line.
func TestCopytruncateThenAFailedWriteLeavesNoHoles(t *testing.T) {
	dir := faultfs.Tmpfs(t, 256<<10)
	path := filepath.Join(dir, "alerts.jsonl")
	l, err := openAlertLog(path, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 20 {
		if err := send(l, testAlert(i)); err != nil {
			t.Fatal(err)
		}
	}
	// copytruncate: the copy is logrotate's business, the truncation ours to survive.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	free := faultfs.Fill(t, dir)
	if err := send(l, testAlert(21)); err == nil {
		t.Fatal("got nil writing to a full disk, want the error")
	}
	free()
	if err := send(l, testAlert(22)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(data, 0) >= 0 {
		t.Fatalf("the alert log holds NUL bytes after copytruncate and a failed write: %q", data[:min(len(data), 80)])
	}
	if lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"); len(lines) != 1 || !json.Valid([]byte(lines[0])) {
		t.Fatalf("got %q, want the one line written after the disk was freed", data)
	}
}

// After a rotation by rename, Reopen (SIGHUP) makes new lines go to a new file at the
// path; the rotated file keeps what it had.
func TestReopenFollowsARename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "alerts.jsonl")
	l, err := openAlertLog(path, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := send(l, testAlert(1)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := send(l, testAlert(2)); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]int{path + ".1": 1, path: 1} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(string(data), "\n"); got != want {
			t.Errorf("%s: got %d lines, want %d", filepath.Base(file), got, want)
		}
	}
}
