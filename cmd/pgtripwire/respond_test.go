package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
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

// TestRespondDryRunThenApply: the dry run prints the SQL and changes nothing; --apply
// terminates the dump, locks the role and appends one firing and one resolved line.
func TestRespondDryRunThenApply(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, "respcli_detector")
	db.CreateRole(t, "respcli_mallory")
	db.CreateRole(t, "respcli_responder", "CREATEROLE")
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text NOT NULL);
		INSERT INTO public.users SELECT g, CASE g WHEN 1 THEN '`+respondSecret+`' ELSE 'u' || g || '@example.com' END FROM generate_series(1, 5000) g;
		GRANT SELECT ON public.users TO respcli_mallory;
		GRANT pg_signal_backend, pg_read_all_stats TO respcli_responder`)
	if db.Server.Version() >= 16 {
		db.Exec(t, `GRANT respcli_mallory TO respcli_responder WITH ADMIN OPTION, INHERIT FALSE, SET FALSE`)
	}
	su, err := pgx.Connect(t.Context(), db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = su.Close(context.Background()) })

	// Mallory's slow dump, until terminated.
	mallory, err := pgx.Connect(t.Context(), db.DSN("respcli_mallory"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	dumpDone := make(chan error, 1)
	go func() {
		rows, err := mallory.Query(ctx, "SELECT email, pg_sleep(0.01) FROM public.users")
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
		}
		dumpDone <- err
	}()
	var dumpErr error
	dumpEnded := false
	t.Cleanup(func() {
		cancel()
		if !dumpEnded {
			<-dumpDone
		}
		_ = mallory.Close(context.Background())
	})
	pid := mallory.PgConn().PID()
	s := evidence.Session{PID: int32(pid)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := su.QueryRow(t.Context(), `SELECT backend_start, usename, datname FROM pg_stat_activity
			WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'`, pid).Scan(&s.BackendStart, &s.Role, &s.Database)
		if err == nil {
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) || time.Now().After(deadline) {
			t.Fatalf("mallory's dump is not active: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	path, alertLog, store := writeRespondConfig(t, db.DSN("respcli_detector"), db.DSN("respcli_responder"))
	if err := os.MkdirAll(filepath.Dir(store.Path(respondFingerprint)), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := store.Save(&evidence.Evidence{
		Fingerprint: respondFingerprint, Rule: "SensitiveBulkRead",
		Labels:   map[string]string{model.LabelRole: "respcli_mallory", model.LabelDatabase: db.Name, model.LabelTable: "public.users"},
		Sessions: []evidence.Session{s},
	}); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCLI(t, "respond", respondFingerprint, "--config", path, "--terminate", "--lock-role")
	if code != exitOK {
		t.Fatalf("dry run: exit %d\nstderr: %s", code, stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE pid = %d AND backend_start = '", pid),
		`ALTER ROLE "respcli_mallory" NOLOGIN;`,
		"dry run: nothing was changed",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the dry run does not print %q:\n%s", want, stdout)
		}
	}
	select {
	case err := <-dumpDone:
		dumpEnded = true
		t.Fatalf("the dry run ended the dump: %v", err)
	default:
	}
	if c, err := pgx.Connect(t.Context(), db.DSN("respcli_mallory")); err != nil {
		t.Errorf("after the dry run, mallory cannot log in: %v", err)
	} else {
		_ = c.Close(t.Context())
	}
	if _, err := os.Stat(alertLog); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dry run touched the alert log: %v", err)
	}

	code, applied, stderr := runCLI(t, "respond", respondFingerprint, "--config", path, "--terminate", "--lock-role", "--apply")
	if code != exitOK {
		t.Fatalf("--apply: exit %d\nstdout: %s\nstderr: %s", code, applied, stderr)
	}
	select {
	case dumpErr = <-dumpDone:
		dumpEnded = true
		if pgCode(dumpErr) != "57P01" {
			t.Errorf("the dump ended with %v, want admin_shutdown 57P01", dumpErr)
		}
	case <-time.After(10 * time.Second):
		t.Error("the dump still runs 10 s after --apply")
	}
	if _, err := pgx.Connect(t.Context(), db.DSN("respcli_mallory")); pgCode(err) != "28000" {
		t.Errorf("mallory logging in after --apply: got %v, want 28000", err)
	}

	data, err := os.ReadFile(alertLog)
	if err != nil {
		t.Fatal(err)
	}
	var lines []model.Alert
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		var a model.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, a)
	}
	if len(lines) != 2 || lines[0].State != model.StateFiring || lines[1].State != model.StateResolved ||
		lines[0].Fingerprint != lines[1].Fingerprint || lines[0].Rule != "ResponseTaken" {
		t.Fatalf("got alert log:\n%s\nwant a ResponseTaken firing line and its resolved line", data)
	}
	for k, want := range map[string]string{"response_to": respondFingerprint, "actions": "terminate,lock_role", "outcome": "applied", "by": "respond", "role": "respcli_mallory"} {
		if got := lines[0].Labels[k]; got != want {
			t.Errorf("label %s: got %q, want %q", k, got, want)
		}
	}
	if sum := lines[0].Annotations["summary"]; !strings.Contains(sum, fmt.Sprintf("terminated 1 session (pid %d), locked role respcli_mallory", pid)) {
		t.Errorf("summary: got %q", sum)
	}
	if strings.Contains(stdout+applied+stderr+string(data), respondSecret) {
		t.Errorf("a value of the table was printed or recorded")
	}
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
