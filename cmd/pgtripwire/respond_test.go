package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/model"
)

// respondSecret is a value of the sensitive table: never printed, never in a line.
const respondSecret = "seeded-secret@example.com"

const respondFingerprint = "fedcba9876543210"

// writeRespondConfig writes a configuration with a state directory, the alert log
// alerts.jsonl and, unless empty, response.dsn; it returns its path, the alert log's
// and the evidence store.
func writeRespondConfig(t *testing.T, dsn, responseDSN string) (path, alertLog string, store *evidence.Store) {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "database:\n  dsn: %q\n", dsn)
	b.WriteString("sensitive:\n  - table: public.users\n    columns: [email]\n")
	b.WriteString("http:\n  listen: \"127.0.0.1:0\"\nalerts:\n  file: alerts.jsonl\n  stdout: false\n")
	b.WriteString("state_dir: state\nroles:\n  application: [respcli_app]\n")
	if responseDSN != "" {
		fmt.Fprintf(&b, "response:\n  dsn: %q\n", responseDSN)
	}
	path = filepath.Join(dir, "pgtripwire.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, filepath.Join(dir, "alerts.jsonl"), evidence.NewStore(filepath.Join(dir, "state", evidence.Dir), time.Hour, 10)
}

func pgCode(err error) string {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code
	}
	return ""
}

func TestRespondErrors(t *testing.T) {
	withResponder, _, store := writeRespondConfig(t, "postgres://pgtripwire:s3cret@127.0.0.1:1/app", "postgres://responder:s3cret@127.0.0.1:1/app")
	withoutResponder, _, _ := writeRespondConfig(t, "postgres://pgtripwire:s3cret@127.0.0.1:1/app", "")
	if err := os.MkdirAll(filepath.Dir(store.Path(respondFingerprint)), 0o750); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"no action", []string{"respond", respondFingerprint, "--config", withResponder}, exitUsage, "no action"},
		{"no fingerprint", []string{"respond", "--config", withResponder, "--terminate"}, exitUsage, "accepts 1 arg"},
		{"not a fingerprint", []string{"respond", "../../etc/passwd", "--config", withResponder, "--terminate"}, exitUsage, "is not an alert fingerprint"},
		{"no config", []string{"respond", respondFingerprint, "--terminate"}, exitUsage, "--config FILE is required"},
		{"no evidence", []string{"respond", "0000000000000000", "--config", withResponder, "--terminate"}, exitRuntime, "no evidence for this fingerprint"},
		{"no response.dsn", []string{"respond", "0000000000000000", "--config", withoutResponder, "--terminate", "--apply"}, exitUsage, "response.dsn is not set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.want) {
				t.Errorf("got exit %d, stderr %q; want %d and %q", code, stderr, tt.wantCode, tt.want)
			}
			if strings.Contains(stdout+stderr, "s3cret") {
				t.Errorf("a password was printed:\n%s%s", stdout, stderr)
			}
		})
	}
}

// A read on a standby, or in another cluster, is not response.dsn's to terminate when
// response.dsn connects to another server: respond --apply refuses before connecting,
// saying which server the read ran on; a dry run still prints the plan.
func TestRespondRefusesASessionOnAnotherServer(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "pgtripwire.yaml")
	body := `sensitive:
  - {table: public.users, columns: [email, password_hash]}
state_dir: ./state
alerts: {file: ./alerts.jsonl}
response: {dsn: "postgres://responder@db1.example:5432/app"}
targets:
  - cluster: eu
    primary: {name: eu-1, dsn: "postgres://pgtripwire@db1.example:5432/app"}
    standbys: [{name: eu-1r, dsn: "postgres://pgtripwire@db1r.example:5432/app"}]
  - cluster: us
    primary: {name: us-1, dsn: "postgres://pgtripwire@db2.example:5432/app"}
`
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	store := detector.EvidenceStore(cfg)
	save := func(cluster, instance string) string {
		a := model.Alert{Rule: "SensitiveBulkRead", Severity: model.SeverityCritical, State: model.StateFiring,
			Labels: map[string]string{model.LabelCluster: cluster, model.LabelInstance: instance, "database": "app",
				"role": "mallory", "table": "public.users"}}
		a.Fingerprint = model.Fingerprint(a.Rule, a.Labels)
		e := evidence.New(evidence.Input{Alert: a}, time.Now())
		e.Sessions = []evidence.Session{{PID: 4242, Role: "mallory", BackendStart: time.Now().Add(-time.Minute)}}
		if err := store.Save(e); err != nil {
			t.Fatal(err)
		}
		return a.Fingerprint
	}
	for _, tc := range []struct {
		name, cluster, instance string
		args                    []string
		want                    string
	}{
		{"a standby's session", "eu", "eu-1r", []string{"--terminate"}, "the read ran on eu-1r and response.dsn connects to eu-1"},
		{"another cluster", "us", "us-1", []string{"--lock-role"}, `the read ran in cluster "us" and response.dsn connects to cluster "eu"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := save(tc.cluster, tc.instance)
			code, stdout, stderr := runCLI(t, append([]string{"respond", fp, "--config", config, "--apply"}, tc.args...)...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("got exit %d, stderr %q; want %d and %q", code, stderr, exitUsage, tc.want)
			}
			if strings.Contains(stdout, "applied") {
				t.Errorf("something was applied:\n%s", stdout)
			}
			if code, stdout, _ = runCLI(t, append([]string{"respond", fp, "--config", config}, tc.args...)...); code != 0 ||
				!strings.Contains(stdout, "dry run") {
				t.Errorf("the dry run: exit %d\n%s", code, stdout)
			}
		})
	}
}
