package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/rules"
)

// writeRuleFiles writes each file into a fresh directory and returns their
// paths in the order given.
func writeRuleFiles(t *testing.T, files ...[2]string) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, f := range files {
		p := filepath.Join(dir, f[0])
		if err := os.WriteFile(p, []byte(f[1]), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

const goodRules = `groups:
  - name: credentials
    rules:
      - name: SensitiveBulkRead
        description: One statement returned 1000 rows per call of sensitive columns.
        severity: critical
        match: event.calls > 0 && size(event.sensitive_read) > 0
        condition:
          threshold: {field: rows_per_call, op: ">=", value: 1000}
      - name: PaginatedSweep
        description: Pages of sensitive rows adding up over 10 minutes.
        severity: critical
        match: size(event.sensitive_read) > 0
        aggregate: {function: sum, field: rows, window: 10m, by: [role, relation]}
        condition:
          threshold: {op: ">=", value: 10000}
`

// TestRulesCheckAcceptance is acceptance 4 of issue 5: a YAML syntax error,
// an unknown key, a CEL type error and a window that does not parse, each in
// its own file, are all reported with file:line:col, and the exit code is 2.
func TestRulesCheckAcceptance(t *testing.T) {
	rule := func(extra string) string {
		return "groups:\n  - name: g\n    rules:\n      - name: R\n        description: d\n        severity: info\n" + extra
	}
	paths := writeRuleFiles(t,
		[2]string{"syntax.yaml", rule("        match: \"event.rows > 0\n")},
		[2]string{"unknown.yaml", rule("        match: event.rows > 0\n        treshold: 5\n")},
		[2]string{"celtype.yaml", rule("        match: event.rows > \"1000\"\n")},
		[2]string{"window.yaml", rule("        match: event.rows > 0\n        aggregate: {function: count, window: 10x}\n        condition: {threshold: {op: \">\", value: 1}}\n")},
		[2]string{"good.yaml", goodRules},
	)
	code, stdout, stderr := runCLI(t, append([]string{"rules", "check"}, paths...)...)
	if code != exitUsage {
		t.Fatalf("exit code: got %d, want %d\nstderr:\n%s", code, exitUsage, stderr)
	}
	for _, want := range []string{
		paths[0] + ":7:16: invalid YAML: ",                                                                       // the unclosed quote
		paths[1] + ":8:9: " + `rule "R": unknown key "treshold"`,                                                 // the misspelt key
		paths[2] + ":7:27: " + `rule "R".match: found no matching overload for '_>_' applied to '(int, string)'`, // at the ">"
		paths[3] + ":8:46: " + `rule "R".aggregate.window: "10x" is not a duration`,                              // at the value
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if got, want := stdout, paths[4]+": 2 rules OK\n"; got != want {
		t.Errorf("stdout: got %q, want %q", got, want)
	}
	// One problem per line, then the summary main prints.
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[4], "pgtripwire: rules check: 4 problem(s) in 4 of 5 file(s)") {
		t.Errorf("stderr: got %d lines, want 4 problems and a summary:\n%s", len(lines), stderr)
	}
}

func TestRulesCheck(t *testing.T) {
	tests := []struct {
		name       string
		files      [][2]string
		wantCode   int
		wantStdout string // with DIR for the directory
		wantStderr []string
	}{
		{
			name:       "good files",
			files:      [][2]string{{"a.yaml", goodRules}, {"empty.yaml", "groups: []\n"}},
			wantCode:   exitOK,
			wantStdout: "DIR/a.yaml: 2 rules OK\nDIR/empty.yaml: OK, but it holds no rule: is that intended?\n",
		},
		{
			name:       "duplicate rule names across files",
			files:      [][2]string{{"a.yaml", goodRules}, {"b.yaml", goodRules}},
			wantCode:   exitUsage,
			wantStdout: "DIR/a.yaml: 2 rules OK\n",
			wantStderr: []string{
				`DIR/b.yaml:4:15: duplicate rule name "SensitiveBulkRead" (first defined at DIR/a.yaml:4:15)`,
				`DIR/b.yaml:10:15: duplicate rule name "PaginatedSweep" (first defined at DIR/a.yaml:10:15)`,
			},
		},
		{
			name:       "missing file",
			files:      nil,
			wantCode:   exitUsage,
			wantStderr: []string{"DIR/missing.yaml: read rule file: "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			paths := writeRuleFiles(t, tt.files...)
			dir := t.TempDir()
			if len(paths) > 0 {
				dir = filepath.Dir(paths[0])
			} else {
				paths = []string{filepath.Join(dir, "missing.yaml")}
			}
			code, stdout, stderr := runCLI(t, append([]string{"rules", "check"}, paths...)...)
			if code != tt.wantCode {
				t.Errorf("exit code: got %d, want %d\nstderr:\n%s", code, tt.wantCode, stderr)
			}
			if want := strings.ReplaceAll(tt.wantStdout, "DIR", dir); stdout != want {
				t.Errorf("stdout: got %q, want %q", stdout, want)
			}
			for _, w := range tt.wantStderr {
				if w = strings.ReplaceAll(w, "DIR", dir); !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

func TestRulesUsage(t *testing.T) {
	for _, args := range [][]string{{"rules"}, {"rules", "check"}, {"rules", "frobnicate"}} {
		if code, _, stderr := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: exit code %d, want %d\nstderr: %s", args, code, exitUsage, stderr)
		}
	}
}

// TestRulesTest runs rule unit tests from the command line: 0 when they
// pass, 1 when one fails, 2 when a test file is bad.
func TestRulesTest(t *testing.T) {
	const passing = `rule_files: [rules.yml]
tests:
  - name: a dump alerts
    input:
      - at: 0s
        event: {source: statements, role: mallory, relation: public.users, sensitive_read: [email], rows: 5000, calls: 1}
    expect:
      - at: 1s
        rule: SensitiveBulkRead
        firing: [{labels: {role: mallory, table: public.users, columns: email, source: statements}}]
`
	failing := strings.Replace(passing, "role: mallory, table", "role: someone, table", 1)
	bad := strings.Replace(passing, "at: 0s", "at: soon", 1)
	paths := writeRuleFiles(t,
		[2]string{"rules.yml", goodRules},
		[2]string{"pass.test.yml", passing},
		[2]string{"fail.test.yml", failing},
		[2]string{"bad.test.yml", bad},
	)
	tests := []struct {
		name       string
		file       string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"pass", paths[1], exitOK, "PASS " + paths[1] + ": a dump alerts\n", ""},
		{"fail", paths[2], exitRuntime, "FAIL " + paths[2] + ": a dump alerts\n", "rules test: some tests failed"},
		{"bad file", paths[3], exitUsage, "", paths[3] + `:5:13: test "a dump alerts".input[0].at: "soon" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, "rules", "test", tt.file)
			if code != tt.wantCode {
				t.Errorf("exit code: got %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.wantCode, stdout, stderr)
			}
			if !strings.HasPrefix(stdout, tt.wantStdout) {
				t.Errorf("stdout: got %q, want it to start with %q", stdout, tt.wantStdout)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr: got %q, want it to contain %q", stderr, tt.wantStderr)
			}
		})
	}
	if code, _, _ := runCLI(t, "rules", "test"); code != exitUsage {
		t.Errorf("no file: got exit %d, want %d", code, exitUsage)
	}
}

// The printed pack is the embedded one, and a file made from it is a valid rule file:
// the documented way to start tuning.
func TestRulesDefaultPrintsAUsableFile(t *testing.T) {
	code, stdout, stderr := runCLI(t, "rules", "default")
	if code != exitOK {
		t.Fatalf("rules default: exit %d, stderr %q", code, stderr)
	}
	if stdout != string(rules.DefaultPack()) {
		t.Fatal("rules default did not print the embedded pack")
	}
	path := filepath.Join(t.TempDir(), "mine.yml")
	if err := os.WriteFile(path, []byte(stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runCLI(t, "rules", "check", path); code != exitOK {
		t.Fatalf("rules check of the printed pack: exit %d\n%s%s", code, out, errOut)
	}
}
