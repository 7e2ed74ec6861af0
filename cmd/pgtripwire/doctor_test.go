package main

import (
	"fmt"
	"os"
	"path/filepath"
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

// With targets:, doctor checks every watched database of every server, each under its
// heading: a database of a server watched with several needs no pg_stat_statements of
// its own (the server's own database has it); a database that does not exist fails
// without hiding the others' reports.
func TestDoctorChecksEveryDatabaseOfAFleet(t *testing.T) {
	bin := buildBinary(t)
	srv := pgtest.NewServer(t, nil)
	app := pgtest.NewDatabaseIn(t, srv)
	crm := pgtest.NewDatabaseIn(t, srv)
	for _, db := range []*pgtest.Database{app, crm} {
		db.Exec(t, `CREATE TABLE public.users (id int, email text, username text, password_hash text)`)
	}
	crm.Exec(t, `DROP EXTENSION pg_stat_statements`)
	dir := t.TempDir()
	config := filepath.Join(dir, "pgtripwire.yaml")
	body := fmt.Sprintf(`sensitive:
  - {table: public.users, columns: [email, password_hash]}
http: {listen: %q}
state_dir: ./state
targets:
  - cluster: eu
    primary: {name: eu-1, dsn: %q}
    databases: [%s, %s, gone]
`, freeAddr(t), srv.SuperuserDSN("postgres"), app.Name, crm.Name)
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runBinary(t, bin, "doctor", "--config", config)
	t.Logf("doctor on a fleet:\n%s", stdout)
	if code != exitRuntime {
		t.Fatalf("got exit %d, want 1 (database gone does not exist)\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"== eu/eu-1/" + app.Name + "\n✓ server version",
		"== eu/eu-1/" + crm.Name + "\n",
		"✓ pg_stat_statements extension: read through database postgres",
		"== eu/eu-1/gone\n✗ connect:",
		"== eu/eu-1/postgres\n", // the statistics database, which alone needs the extension
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "✗ pg_stat_statements extension") {
		t.Errorf("a database of a shared server was asked for the extension:\n%s", stdout)
	}
	if !strings.Contains(stderr, "1 database(s) failed") {
		t.Errorf("stderr: %s", stderr)
	}
}
