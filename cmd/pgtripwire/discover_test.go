package main

import (
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

const discoverSchema = `
	CREATE TABLE public.users (
		id int PRIMARY KEY, email text, username text, password_hash text,
		email_verified boolean, password_updated_at timestamptz);
	CREATE TABLE public.orders (id int, note text);
	INSERT INTO public.users VALUES
		(1, 'ada.qz@example.org', 'ada_qz', '$2b$12$abcdefghijklmnopqrstuuVQ8b2cFw7Zb9t3rJ3yGZ3dJpXq0Ku1a', true, now()),
		(2, 'bob.qz@example.org', 'bob_qz', '$2b$12$ABCDEFGHIJKLMNOPQRSTUuKx0pW1h3LwJmJ6W2cE1bZx1r2s3t4u5', false, now());
	INSERT INTO public.orders VALUES (1, 'leave at the door')`

const wantBlock = "sensitive:\n  - table: public.users\n    columns: [email, password_hash, username]\n"

func TestDiscoverPrintsTheSensitiveBlock(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, discoverSchema)
	path := configFile{DSN: db.SuperuserDSN(), Listen: "127.0.0.1:0", StateDir: t.TempDir()}.write(t, t.TempDir())

	code, stdout, stderr := runCLI(t, "discover", "--config", path)
	if code != exitOK {
		t.Fatalf("exit code: got %d, want 0\nstderr: %s", code, stderr)
	}
	if !strings.Contains(stdout, wantBlock) {
		t.Errorf("stdout lacks\n%s\ngot:\n%s", wantBlock, stdout)
	}
	for _, leak := range []string{"ada.qz", "ada_qz", "bob.qz", "bob_qz", "@example", "$2b$", "abcdefgh", "ABCDEFGH", "leave at"} {
		if strings.Contains(stdout+stderr, leak) {
			t.Errorf("output holds %q, part of a sampled value:\n%s", leak, stdout)
		}
	}
	if !strings.Contains(stdout, "2 bcrypt (cost 12)") {
		t.Errorf("stdout does not name the hash scheme:\n%s", stdout)
	}
}

// TestDiscoverWithoutConfig is the first run: no configuration yet, the
// connection from PGTRIPWIRE_DSN.
func TestDiscoverWithoutConfig(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, discoverSchema)
	t.Setenv(config.EnvDSN, db.SuperuserDSN())

	code, stdout, stderr := runCLI(t, "discover", "--sample", "0")
	if code != exitOK {
		t.Fatalf("exit code: got %d, want 0\nstderr: %s", code, stderr)
	}
	if !strings.Contains(stdout, wantBlock) || !strings.Contains(stdout, "names and types only") {
		t.Errorf("stdout lacks the block or the names-only note:\n%s", stdout)
	}
}

func TestDiscoverExitCodes(t *testing.T) {
	unreachable := writeConfig(t, "postgres://pgtripwire:s3cret@127.0.0.1:1/app", "127.0.0.1:0", t.TempDir())
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"discover", "--config", unreachable}, exitRuntime},
		{[]string{"discover", "--config", unreachable, "--sample", "-1"}, exitUsage},
		{[]string{"discover", "--config", unreachable, "--sample", "many"}, exitUsage},
		{[]string{"discover", "--config", unreachable, "extra"}, exitUsage},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[1:], " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.want {
				t.Fatalf("got exit %d, want %d\nstderr: %s", code, tt.want, stderr)
			}
			if strings.Contains(stdout+stderr, "s3cret") {
				t.Errorf("the password was printed:\n%s", stderr)
			}
		})
	}
}
