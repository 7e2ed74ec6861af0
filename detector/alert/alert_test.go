package alert

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFingerprintIsStableAndLabelSensitive(t *testing.T) {
	a := Fingerprint("SensitiveBulkRead", map[string]string{"table": "public.users", "role": "mallory"})
	b := Fingerprint("SensitiveBulkRead", map[string]string{"role": "mallory", "table": "public.users"})
	if a != b {
		t.Fatalf("got %s and %s for the same labels in another order, want equal", a, b)
	}
	for name, other := range map[string]string{
		"other rule":  Fingerprint("Other", map[string]string{"table": "public.users", "role": "mallory"}),
		"other role":  Fingerprint("SensitiveBulkRead", map[string]string{"table": "public.users", "role": "app"}),
		"shifted k/v": Fingerprint("SensitiveBulkRead", map[string]string{"table": "public.usersrole", "": "mallory"}),
	} {
		if other == a {
			t.Errorf("%s: got the same fingerprint %s, want a different one", name, a)
		}
	}
	if len(a) != 16 {
		t.Fatalf("got %q, want 16 hex digits", a)
	}
}

func TestLogWritesOneLinePerTransition(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "alerts.jsonl")
	var stdout bytes.Buffer
	reg := prometheus.NewRegistry()
	l, err := OpenLog(path, &stdout, reg)
	if err != nil {
		t.Fatal(err)
	}
	l.PrecreateRule("Quiet", SeverityInfo)
	at := time.Date(2026, 11, 29, 6, 0, 0, 123, time.UTC)
	labels := map[string]string{LabelTable: "public.users", LabelRole: "mallory"}
	firing := Alert{Time: at, State: StateFiring, Rule: "SensitiveBulkRead", Severity: SeverityCritical,
		Fingerprint: Fingerprint("SensitiveBulkRead", labels), Value: 50000, Labels: labels,
		Annotations: map[string]string{AnnotationSummary: "s"}}
	resolved := firing
	resolved.State, resolved.Time = StateResolved, at.Add(time.Minute)
	for _, a := range []Alert{firing, resolved} {
		if err := l.Write(a); err != nil {
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
	if _, err := OpenLog(filepath.Join(blocker, "alerts.jsonl"), nil, prometheus.NewRegistry()); err == nil {
		t.Fatal("got nil error for a path under a regular file, want one")
	}
}
