package main

import (
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// TestDoctorNamesWhatIsMissing is acceptance 3 of issue #9 (the good server is in
// TestSetupThenDetectAsTheCreatedRole): without logical WAL and without
// pg_stat_statements, doctor exits 1 and names both, each with its fix.
func TestDoctorNamesWhatIsMissing(t *testing.T) {
	bin := buildBinary(t)
	srv := pgtest.NewServer(t, map[string]string{"wal_level": "replica", "shared_preload_libraries": ""})
	db := pgtest.NewDatabaseIn(t, srv)
	db.Exec(t, `DROP EXTENSION pg_stat_statements;
		CREATE TABLE public.users (id int, email text, username text, password_hash text)`)
	dir := t.TempDir()
	config := writeSetupConfig(t, dir, db.SuperuserDSN(), freeAddr(t), db.Name)

	code, stdout, stderr := runBinary(t, bin, "doctor", "--config", config)
	t.Logf("doctor on a bare server:\n%s", stdout)
	if code != exitRuntime {
		t.Fatalf("got exit %d, want 1\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"✗ wal_level: replica, want logical",
		"fix: in postgresql.conf: wal_level = logical",
		"✗ shared_preload_libraries:",
		"fix: in postgresql.conf: shared_preload_libraries = 'pg_stat_statements'",
		"✗ pg_stat_statements extension: not installed",
		"fix: as a superuser, in this database: CREATE EXTENSION pg_stat_statements;",
		"! role postgres: is a superuser",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "check(s) failed") {
		t.Errorf("stderr: %s", stderr)
	}
}
