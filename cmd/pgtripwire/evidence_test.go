package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/evidence"
)

func TestEvidencePrintsWhatWasCaptured(t *testing.T) {
	stateDir := filepath.Join(t.TempDir(), "state")
	path := writeConfig(t, "host=localhost dbname=app", "127.0.0.1:0", stateDir)
	fired := time.Date(2026, 12, 7, 3, 4, 5, 0, time.UTC)
	want := &evidence.Evidence{
		Fingerprint: "0123456789abcdef", Rule: "SensitiveBulkRead", Severity: "critical",
		Labels: map[string]string{"role": "mallory", "table": "public.users"}, FiredAt: fired, CapturedAt: fired,
		Sessions: []evidence.Session{{PID: 4242, BackendStart: fired.Add(-time.Hour), Role: "mallory",
			ClientAddr: "192.0.2.7", ClientPort: 50123, State: "active", Statement: "SELECT email FROM users WHERE id > $1", Trigger: true}},
		Related: []evidence.Related{},
	}
	if err := evidence.NewStore(filepath.Join(stateDir, evidence.Dir), time.Hour, 10).Save(want); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCLI(t, "evidence", want.Fingerprint, "--config", path)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got evidence.Evidence
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || got.Sessions[0].PID != 4242 || got.Sessions[0].ClientAddr != "192.0.2.7" {
		t.Fatalf("got %s (%v), want the saved evidence as JSON", stdout, err)
	}
	code, stdout, stderr = runCLI(t, "evidence", want.Fingerprint, "--config", path, "--format", "text")
	if code != exitOK || !strings.Contains(stdout, "pid 4242 (the triggering session)") || !strings.Contains(stdout, "192.0.2.7:50123") {
		t.Fatalf("text: exit %d, got:\n%s%s", code, stdout, stderr)
	}

	for _, tc := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"evidence", "fedcba9876543210", "--config", path}, exitRuntime, "never captured, or expired"},
		{[]string{"evidence", "../../etc/passwd", "--config", path}, exitUsage, "not an alert fingerprint"},
		{[]string{"evidence", want.Fingerprint, "--config", path, "--format", "yaml"}, exitUsage, "want json or text"},
		{[]string{"evidence", want.Fingerprint}, exitUsage, "--config FILE is required"},
	} {
		code, _, stderr := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.inStderr) {
			t.Errorf("%q: got exit %d, %q; want exit %d naming %q", tc.args, code, stderr, tc.code, tc.inStderr)
		}
	}
}
