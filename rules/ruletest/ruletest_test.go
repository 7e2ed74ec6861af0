package ruletest

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("output of %s:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		file     string
		wantOK   bool
		wantErrs bool
	}{
		{"sweep.test.yml", true, false},
		{"failing.test.yml", false, false},
		{"bad.test.yml", false, true},
		{"badrules.test.yml", false, true},
		{"norule.test.yml", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			var out bytes.Buffer
			ok, errs := Run(&out, filepath.Join("testdata", tt.file))
			if ok != tt.wantOK || (errs != nil) != tt.wantErrs {
				t.Errorf("got ok=%v errs=%v, want ok=%v errors=%v\n%s", ok, errs, tt.wantOK, tt.wantErrs, out.String())
			}
			report := out.String()
			if errs != nil {
				report += "errors:\n" + errs.Error() + "\n"
			}
			golden(t, strings.TrimSuffix(tt.file, ".test.yml")+".out", report)
		})
	}
}

// TestTicksAndEventOrder pins the time model: an expectation between two
// ticks sees the events up to its time, and not those after it.
func TestTicksAndEventOrder(t *testing.T) {
	dir := t.TempDir()
	rules, err := os.ReadFile(filepath.Join("testdata", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	src := `rule_files: [rules.yml]
tests:
  - name: t
    input:
      - at: 1500ms
        event: {source: statements, role: r, relation: public.users, sensitive_read: [email], rows: 1000, calls: 1}
    expect:
      - at: 1499ms
        rule: SensitiveBulkRead
        firing: []
      - at: 1500ms
        rule: SensitiveBulkRead
        firing: [{labels: {source: statements, role: r, table: public.users, columns: email}}]
`
	p := filepath.Join(dir, "t.test.yml")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if ok, errs := Run(&out, p); !ok || errs != nil {
		t.Errorf("got ok=%v, %v\n%s", ok, errs, out.String())
	}
}

// Test files are read by the same YAML front end as rule files: syntax
// errors with their column, strict mappings, one document.
func TestParseYAMLProblems(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"unclosed quote", "rule_files: [rules.yml]\ntests:\n  - name: 'x\n",
			`t.yml:3:11: invalid YAML: found unexpected end of stream (an unclosed quote or bracket?)`},
		{"duplicate key", "rule_files: [a.yml]\nrule_files: [b.yml]\ntests: []\n",
			`t.yml:2:1: test file: duplicate key "rule_files" (first at 1:1)`},
		{"merge key", "rule_files: [a.yml]\ntests:\n  - <<: {name: x}\n    expect: []\n",
			`t.yml:3:5: tests[0]: merge keys (<<) are not supported; write the keys out`},
		{"second document", "rule_files: [a.yml]\ntests: []\n---\ntests: []\n",
			`t.yml:3:1: a second YAML document starts here; a rule test file holds one`},
		{"not a boolean", "rule_files: [a.yml]\ntests:\n  - name: x\n    input: [{at: 0s, event: {complete: yes}}]\n    expect: []\n",
			`t.yml:4:40: test "x".input[0].event.complete: want true or false, got "yes"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := Parse("t.yml", []byte(tt.src))
			if len(errs) == 0 || errs[0].Error() != tt.want {
				t.Errorf("got errors\n%v\nwant first %s", errs, tt.want)
			}
		})
	}
}
