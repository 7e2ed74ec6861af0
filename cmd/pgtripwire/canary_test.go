package main

import (
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// TestCanaryPlantListRemove plants through the CLI with a superuser --dsn and the
// detector's role in the configuration, then lists and removes.
func TestCanaryPlantListRemove(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, "canary_cli_detector")
	db.Exec(t, `CREATE TABLE public.users (id serial PRIMARY KEY, email text NOT NULL, username text NOT NULL, password_hash text NOT NULL);
		INSERT INTO public.users (email, username, password_hash) SELECT g || '@example.com', 'u' || g, 'x' FROM generate_series(1, 10) g`)
	path := writeConfig(t, db.DSN("canary_cli_detector"), "127.0.0.1:0", t.TempDir())
	su := db.SuperuserDSN()

	code, stdout, stderr := runCLI(t, "canary", "plant", "--config", path, "--dsn", su, "--table", "public.users", "--count", "2", "--domain", "mail.example.net")
	if code != exitOK {
		t.Fatalf("plant: exit %d\nstderr: %s", code, stderr)
	}
	if got := strings.Count(stdout, "planted public.users#"); got != 2 {
		t.Errorf("plant printed %d canaries, want 2:\n%s", got, stdout)
	}
	// The detector's role was granted the tamper check's read.
	var ok bool
	if err := db.Conn(t, "canary_cli_detector").QueryRow(t.Context(),
		`SELECT has_table_privilege('pgtripwire_canary.planted', 'SELECT')`).Scan(&ok); err != nil || !ok {
		t.Errorf("detector role may not read the registry: %v %v", ok, err)
	}

	code, stdout, stderr = runCLI(t, "canary", "list", "--config", path, "--dsn", su)
	if code != exitOK || strings.Count(stdout, "public.users#") != 2 {
		t.Errorf("list: exit %d, stdout:\n%s\nstderr: %s", code, stdout, stderr)
	}

	code, stdout, stderr = runCLI(t, "canary", "remove", "--config", path, "--dsn", su, "--table", "public.users")
	if code != exitOK || !strings.Contains(stdout, "removed 2 canary rows from public.users") {
		t.Errorf("remove: exit %d, stdout:\n%s\nstderr: %s", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, "canary", "remove", "--config", path, "--dsn", su, "--table", "public.users")
	if code != exitRuntime || !strings.Contains(stderr, "no canaries planted") {
		t.Errorf("second remove: exit %d, stderr: %s; want 1 and no canaries planted", code, stderr)
	}
}

func TestCanaryUsageErrors(t *testing.T) {
	path := writeConfig(t, "postgres://pgtripwire:s3cret@127.0.0.1:1/app", "127.0.0.1:0", t.TempDir())
	for _, args := range [][]string{
		{"canary"},
		{"canary", "plant", "--config", path, "--domain", "mail.example.net"}, // no --table
		{"canary", "plant", "--config", path, "--table", "public.users"},      // no --domain
		{"canary", "plant", "--config", path, "--table", "public.users", "--domain", "d.example", "--count", "0"},
		{"canary", "list"}, // no --config
		{"canary", "remove", "--config", path},
		{"canary", "list", "--config", path, "--dsn", "postgres://u:s3cret@%zz"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, args...)
			if code != exitUsage {
				t.Errorf("got exit %d, want %d\nstderr: %s", code, exitUsage, stderr)
			}
			if strings.Contains(stdout+stderr, "s3cret") {
				t.Errorf("a password was printed:\n%s%s", stdout, stderr)
			}
		})
	}
}
