package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// classifyResult is the JSON contract of `pgtripwire classify`.
type classifyResult struct {
	Operation           string            `json:"operation"`
	Relations           []string          `json:"relations"`
	SensitiveRead       []string          `json:"sensitive_read"`
	SensitiveReferenced []string          `json:"sensitive_referenced"`
	Access              map[string]string `json:"access"`
	Shapes              []string          `json:"shapes"`
	Complete            bool              `json:"complete"`
	Problems            []string          `json:"problems"`
}

// parseResults decodes stdout as one JSON object per line, insisting that
// the arrays of the contract are arrays, not null.
func parseResults(t *testing.T, stdout string) []classifyResult {
	t.Helper()
	var out []classifyResult
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		for _, key := range []string{"operation", "relations", "sensitive_read", "sensitive_referenced", "complete"} {
			v, ok := raw[key]
			if !ok || string(v) == "null" {
				t.Fatalf("line %q: %s is missing or null", line, key)
			}
		}
		var r classifyResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// classifyDatabase is a database with the configured sensitive table
// public.users, a view over it and a non-sensitive schema app, and a config
// file for it.
func classifyDatabase(t *testing.T) (db *pgtest.Database, configPath string) {
	t.Helper()
	db = pgtest.NewDatabase(t)
	db.Exec(t, `
		CREATE TABLE public.users (id int PRIMARY KEY, email text UNIQUE, username text, password_hash text);
		CREATE VIEW public.user_directory AS SELECT id, username, email FROM public.users;
		CREATE SCHEMA app;
		CREATE TABLE app.things (id int, label text)`)
	return db, configFile{DSN: db.SuperuserDSN(), Listen: "127.0.0.1:0", StateDir: t.TempDir()}.write(t, t.TempDir())
}

func TestClassifyWithCatalog(t *testing.T) {
	_, path := classifyDatabase(t)
	tests := []struct {
		name string
		args []string
		want classifyResult
	}{
		{
			name: "star reads every sensitive column",
			args: []string{"SELECT * FROM users"},
			want: classifyResult{Operation: "SELECT", Relations: []string{"public.users"},
				SensitiveRead:       []string{"public.users.email", "public.users.password_hash", "public.users.username"},
				SensitiveReferenced: []string{}, Access: map[string]string{"public.users": "scan"}, Complete: true},
		},
		{
			name: "a view is expanded",
			args: []string{"SELECT * FROM user_directory"},
			want: classifyResult{Operation: "SELECT", Relations: []string{"public.user_directory", "public.users"},
				SensitiveRead:       []string{"public.users.email", "public.users.username"},
				SensitiveReferenced: []string{}, Access: map[string]string{"public.users": "scan"}, Complete: true},
		},
		{
			name: "a login lookup only references, by a unique key",
			args: []string{"SELECT id, password_hash FROM users WHERE email = $1"},
			want: classifyResult{Operation: "SELECT", Relations: []string{"public.users"},
				SensitiveRead:       []string{"public.users.password_hash"},
				SensitiveReferenced: []string{"public.users.email"}, Access: map[string]string{"public.users": "point"}, Complete: true},
		},
		{
			name: "keyset pages through a view are ranges",
			args: []string{"SELECT id, email FROM user_directory WHERE id > $1 ORDER BY id LIMIT 50"},
			want: classifyResult{Operation: "SELECT", Relations: []string{"public.user_directory", "public.users"},
				SensitiveRead: []string{"public.users.email"}, SensitiveReferenced: []string{},
				Access: map[string]string{"public.users": "range"}, Complete: true},
		},
		{
			name: "a folded read, one row for every user",
			args: []string{"COPY (SELECT string_agg(email, ',') FROM users) TO STDOUT"},
			want: classifyResult{Operation: "COPY", Relations: []string{"public.users"},
				SensitiveRead: []string{"public.users.email"}, SensitiveReferenced: []string{},
				Access: map[string]string{"public.users": "scan"}, Shapes: []string{"folded"}, Complete: true},
		},
		{
			name: "a server file, from any table",
			args: []string{"COPY app.things TO PROGRAM 'gzip > /tmp/t.gz'"},
			want: classifyResult{Operation: "COPY TO PROGRAM", Relations: []string{"app.things"},
				SensitiveRead: []string{}, SensitiveReferenced: []string{}, Shapes: []string{"server_file"}, Complete: true},
		},
		{
			name: "reconnaissance of every column",
			args: []string{"SELECT table_name, column_name FROM information_schema.columns"},
			want: classifyResult{Operation: "SELECT", Relations: []string{"information_schema.columns"},
				SensitiveRead: []string{}, SensitiveReferenced: []string{}, Shapes: []string{"catalog_columns"}, Complete: true},
		},
		{
			name: "unqualified names outside the search path are unknown",
			args: []string{"SELECT * FROM things"},
			want: classifyResult{Operation: "SELECT", Relations: []string{},
				SensitiveRead: []string{}, SensitiveReferenced: []string{}, Complete: false},
		},
		{
			name: "--search-path overrides database.search_path",
			args: []string{"--search-path", "app, public", "SELECT * FROM things"},
			want: classifyResult{Operation: "SELECT", Relations: []string{"app.things"},
				SensitiveRead: []string{}, SensitiveReferenced: []string{}, Complete: true},
		},
		{
			name: `--role stands for "$user"`,
			args: []string{"--search-path", `"$user"`, "--role", "app", "SELECT * FROM things"},
			want: classifyResult{Operation: "SELECT", Relations: []string{"app.things"},
				SensitiveRead: []string{}, SensitiveReferenced: []string{}, Complete: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"classify", "--config", path}, tt.args...)...)
			if code != exitOK {
				t.Fatalf("exit code: got %d, want 0\nstderr: %s", code, stderr)
			}
			got := parseResults(t, stdout)
			if len(got) != 1 {
				t.Fatalf("got %d results, want exactly 1:\n%s", len(got), stdout)
			}
			g := got[0]
			if g.Operation != tt.want.Operation || !slices.Equal(g.Relations, tt.want.Relations) ||
				!slices.Equal(g.SensitiveRead, tt.want.SensitiveRead) ||
				!slices.Equal(g.SensitiveReferenced, tt.want.SensitiveReferenced) || g.Complete != tt.want.Complete ||
				!maps.Equal(g.Access, tt.want.Access) || !slices.Equal(g.Shapes, tt.want.Shapes) {
				t.Errorf("got %+v\nwant %+v", g, tt.want)
			}
			if !g.Complete && len(g.Problems) == 0 {
				t.Errorf("an incomplete result without problems: %+v", g)
			}
		})
	}
}

// TestClassifyReadsStdin runs the real binary, whose standard input is the
// process's.
func TestClassifyReadsStdin(t *testing.T) {
	bin := buildBinary(t)
	_, path := classifyDatabase(t)
	cmd := exec.Command(bin, "classify", "--config", path, "-")
	cmd.Stdin = strings.NewReader("SELECT email FROM users\n\nSELECT count(*) FROM users WHERE username = $1\nSELECT label FROM app.things\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\nstderr: %s", err, stderr.String())
	}
	got := parseResults(t, stdout.String())
	if len(got) != 3 {
		t.Fatalf("got %d results, want 3 (the empty line skipped):\n%s", len(got), stdout.String())
	}
	if !slices.Equal(got[0].SensitiveRead, []string{"public.users.email"}) ||
		!slices.Equal(got[1].SensitiveReferenced, []string{"public.users.username"}) || len(got[1].SensitiveRead) != 0 ||
		!slices.Equal(got[2].Relations, []string{"app.things"}) || len(got[2].SensitiveRead) != 0 {
		t.Errorf("results out of order or wrong:\n%s", stdout.String())
	}
}

func TestClassifyWithoutConfigKnowsNoRelation(t *testing.T) {
	code, stdout, stderr := runCLI(t, "classify", "SELECT email FROM users", "SELECT 1")
	if code != exitOK {
		t.Fatalf("exit code: got %d, want 0\nstderr: %s", code, stderr)
	}
	if n := strings.Count(stderr, "no --config: no catalog, every relation is unknown"); n != 1 {
		t.Errorf("stderr says it %d times, want once:\n%s", n, stderr)
	}
	got := parseResults(t, stdout)
	if len(got) != 2 {
		t.Fatalf("got %d results, want 2:\n%s", len(got), stdout)
	}
	if got[0].Complete || len(got[0].Problems) == 0 {
		t.Errorf("a statement over an unknown relation: got complete %v, problems %v; want incomplete, with problems",
			got[0].Complete, got[0].Problems)
	}
	if !got[1].Complete {
		t.Errorf("SELECT 1 touches no relation: got incomplete %v", got[1].Problems)
	}
	// access and shapes are left out when there are none.
	if line := strings.Split(stdout, "\n")[1]; strings.Contains(line, `"access"`) || strings.Contains(line, `"shapes"`) {
		t.Errorf("SELECT 1: got %s, want no access and no shapes keys", line)
	}
}

func TestClassifyUnreachableDatabaseExits1(t *testing.T) {
	path := writeConfig(t, "postgres://pgtripwire:s3cret@127.0.0.1:1/app", "127.0.0.1:0", t.TempDir())
	code, stdout, stderr := runCLI(t, "classify", "--config", path, "SELECT 1")
	if code != exitRuntime {
		t.Fatalf("exit code: got %d, want %d\nstderr: %s", code, exitRuntime, stderr)
	}
	if stdout != "" {
		t.Errorf("got output %q, want none", stdout)
	}
	if strings.Contains(stdout+stderr, "s3cret") {
		t.Errorf("the password was printed:\n%s", stderr)
	}
}

func TestClassifyUsageErrorsExit2(t *testing.T) {
	tests := [][]string{
		{"classify"},
		{"classify", "--bogus", "SELECT 1"},
		{"classify", "--search-path", `"unterminated`, "SELECT 1"},
		{"classify", "--search-path", "a,,b", "SELECT 1"},
		{"classify", "--config", filepath.Join(t.TempDir(), "missing.yaml"), "SELECT 1"},
		{"classify", "--config", filepath.Join("testdata", "unknown-key-and-wrong-type.bad.yaml"), "SELECT 1"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			if code, _, stderr := runCLI(t, args...); code != exitUsage {
				t.Fatalf("got exit %d, want %d\nstderr: %s", code, exitUsage, stderr)
			}
		})
	}
}
