package rulefmt

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
)

var update = flag.Bool("update", false, "rewrite the golden .errors files of testdata/*.bad.yaml")

func TestParseGoodFiles(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.good.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no good files: %v", err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			f, errs := ParseFile(p)
			if errs != nil {
				t.Fatalf("ParseFile: got errors\n%v", errs)
			}
			for _, g := range f.Groups {
				for _, r := range g.Rules {
					if _, err := r.Match(model.Event{}); err != nil {
						t.Errorf("rule %s: Match on an empty event: %v", r.Name, err)
					}
				}
			}
		})
	}
}

// TestParseBadFiles compares every error of each bad file with its golden
// file testdata/NAME.errors; run with -update to rewrite them after checking
// the diff.
func TestParseBadFiles(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no bad files: %v", err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			f, errs := ParseFile(p)
			if f != nil || len(errs) == 0 {
				t.Fatalf("ParseFile: got %d errors and file %v, want errors and no file", len(errs), f)
			}
			for _, e := range errs {
				if e.File != p || e.Line < 1 {
					t.Errorf("error without a position in %s: %v", p, e)
				}
			}
			got := errs.Error() + "\n"
			golden := strings.TrimSuffix(p, ".bad.yaml") + ".errors"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("errors of %s:\ngot:\n%swant:\n%s", p, got, want)
			}
		})
	}
}

// TestCELPositions checks that an error inside a match expression points at
// the offending token in the file, whatever the scalar's style.
func TestCELPositions(t *testing.T) {
	tests := []struct {
		name  string
		match string // YAML text after "match:"
		want  string // line:col of the error
		token string // what the position must point at
	}{
		{"plain", ` event.rows > "1000"`, "7:27", ">"},
		{"plain undeclared", ` event.rows > 0 && evnt.x`, "7:34", "evnt"},
		{"single quoted", ` 'event.role == ''x'' && evnt.rows > 0'`, "7:40", "evnt"},
		{"double quoted with escapes", ` "event.role == \"x\" && evnt.rows > 0"`, "7:40", "evnt"},
		{"literal block", " |\n          event.calls > 0 &&\n            evnt.rows > 0", "9:13", "evnt"},
		{"folded block", " >\n          event.calls > 0 &&\n          evnt.rows > 0", "9:11", "evnt"},
		{"multi-line plain", "\n          event.calls > 0 &&\n          evnt.rows > 0", "9:11", "evnt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "groups:\n  - name: g\n    rules:\n      - name: R\n        description: d\n        severity: info\n        match:" + tt.match + "\n"
			_, errs := Parse("r.yaml", []byte(src))
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1:\n%v", len(errs), errs)
			}
			got := errs[0]
			if pos := strings.TrimPrefix(got.String(), "r.yaml:"); pos != tt.want {
				t.Errorf("got position %s, want %s (%v)", pos, tt.want, got)
			}
			lines := strings.Split(src, "\n")
			line := []rune(lines[got.Line-1])
			if got.Column < 1 || got.Column-1 >= len(line) || !strings.HasPrefix(string(line[got.Column-1:]), tt.token) {
				t.Errorf("position %d:%d does not point at %q in %q", got.Line, got.Column, tt.token, lines[got.Line-1])
			}
		})
	}
}

// TestRulesCheckAcceptance is acceptance 4 of issue 5 at the package level:
// a YAML syntax error, an unknown key, a CEL type error and a window that
// does not parse, all reported with their positions in one call.
func TestLoadFilesReportsEveryFile(t *testing.T) {
	_, errs := LoadFiles("testdata/syntax.bad.yaml", "testdata/unknown_key.bad.yaml", "testdata/cel.bad.yaml", "testdata/window.bad.yaml")
	text := errs.Error()
	for _, want := range []string{
		"testdata/syntax.bad.yaml:5:16: invalid YAML",
		"testdata/unknown_key.bad.yaml:3:5: ",
		"testdata/cel.bad.yaml:7:27: ",
		"testdata/window.bad.yaml:8:46: ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("errors lack %q:\n%s", want, text)
		}
	}
}

func TestLoadFilesDuplicateNames(t *testing.T) {
	dir := t.TempDir()
	write := func(name, ruleName string) string {
		p := filepath.Join(dir, name)
		src := "groups:\n  - name: g\n    rules:\n      - name: " + ruleName + "\n        description: d\n        severity: info\n        match: event.rows > 0\n"
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := write("a.yaml", "Same"), write("b.yaml", "Same")
	groups, errs := LoadFiles(a, b)
	if groups != nil || len(errs) != 1 {
		t.Fatalf("got %d groups and errors %v, want one error", len(groups), errs)
	}
	want := b + `:4:15: duplicate rule name "Same" (first defined at ` + a + ":4:15)"
	if got := errs[0].Error(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	groups, errs = LoadFiles(a, write("c.yaml", "Other"))
	if errs != nil || len(groups) != 2 {
		t.Errorf("distinct names: got %d groups, errors %v; want 2 groups", len(groups), errs)
	}
}

func TestParseFileMissing(t *testing.T) {
	_, errs := ParseFile("testdata/does-not-exist.yaml")
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "testdata/does-not-exist.yaml: read rule file:") {
		t.Errorf("got %v", errs)
	}
}

// A secret pasted into a rule file is redacted from messages, as in the
// config file: the value quoted is the shared front end's.
func TestSecretsNotPrinted(t *testing.T) {
	src := "groups:\n  - name: g\n    rules:\n      - name: R\n        description: d\n        severity: 'postgres://app:S3cret@db/app'\n        match: event.rows > 0\n"
	_, errs := Parse("r.yaml", []byte(src))
	want := `r.yaml:6:19: rule "R": severity "postgres://app:xxxxx@db/app" is not one of critical, warning, info`
	if errs.Error() != want {
		t.Errorf("got\n%v\nwant %s", errs, want)
	}
}

func mustParse(t testing.TB, src string) *File {
	t.Helper()
	f, errs := Parse("t.yaml", []byte(src))
	if errs != nil {
		t.Fatalf("Parse:\n%v", errs)
	}
	return f
}

func ruleWithMatch(t testing.TB, match string) *Rule {
	t.Helper()
	f := mustParse(t, "groups:\n  - name: g\n    rules:\n      - name: R\n        description: d\n        severity: info\n        match: '"+strings.ReplaceAll(match, "'", "''")+"'\n")
	return f.Groups[0].Rules[0]
}

func TestMatch(t *testing.T) {
	ev := model.Event{
		Time: time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC), Source: "statements",
		Database: "app", Role: "mallory", ClientAddr: "203.0.113.7", Application: "psql",
		Operation: "SELECT", Relation: "public.users",
		SensitiveRead: []string{"email", "password_hash"}, SensitiveReferenced: []string{"username"},
		Complete: true, Rows: 5000, Calls: 2, QueryID: -42,
	}
	tests := []struct {
		match string
		want  bool
	}{
		{`event.source == "statements" && size(event.sensitive_read) > 0`, true},
		{`event.rows_per_call >= 2500 && event.calls == 2 && event.rows == 5000`, true},
		{`event.rows_per_call > 2500`, false},
		{`"password_hash" in event.sensitive_read && "username" in event.sensitive_referenced`, true},
		{`event.relation.startsWith("public.") && event.database == "app" && event.operation == "SELECT"`, true},
		{`event.role == "mallory" && event.client_addr == "203.0.113.7" && event.application == "psql"`, true},
		{`event.query_id == -42 && event.complete`, true},
		{`event.time > timestamp("2026-11-29T02:00:00Z") && event.time.getHours() == 3`, true},
		{`has(event.client_addr) && !has(event.lsn) && event.lsn == 0 && !has(event.kind)`, true},
		{`event.sensitive_read.exists(c, c.endsWith("hash"))`, true},
	}
	for _, tt := range tests {
		t.Run(tt.match, func(t *testing.T) {
			got, err := ruleWithMatch(t, tt.match).Match(ev)
			if err != nil || got != tt.want {
				t.Errorf("Match: got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	t.Run("absent client address", func(t *testing.T) {
		got, err := ruleWithMatch(t, `has(event.client_addr)`).Match(model.Event{})
		if err != nil || got {
			t.Errorf("got %v, %v; want false", got, err)
		}
	})
}

func TestMatchRuntimeError(t *testing.T) {
	r := ruleWithMatch(t, `event.sensitive_read[3] == "email"`)
	if _, err := r.Match(model.Event{SensitiveRead: []string{"email"}}); err == nil {
		t.Error("index out of range: got no error")
	}
}

func TestMatchCostLimit(t *testing.T) {
	// Nested comprehensions over a long list blow any sane budget.
	r := ruleWithMatch(t, `event.sensitive_read.all(a, event.sensitive_read.all(b, event.sensitive_read.all(c, a + b + c != "")))`)
	cols := make([]string, 100)
	for i := range cols {
		cols[i] = "c"
	}
	_, err := r.Match(model.Event{SensitiveRead: cols})
	if err == nil || !strings.Contains(err.Error(), "cost") {
		t.Errorf("got %v, want a cost limit error", err)
	}
}

func TestExampleRule(t *testing.T) {
	f, errs := ParseFile("testdata/example.good.yaml")
	if errs != nil {
		t.Fatal(errs)
	}
	r := f.Groups[0].Rules[0]
	if r.Name != "SensitiveBulkRead" || r.Severity != SeverityCritical || r.Aggregate != nil ||
		r.Condition.Threshold == nil || *r.Condition.Threshold != (Threshold{Field: "rows_per_call", Op: OpGE, Value: 1000}) {
		t.Fatalf("got %+v", r)
	}
	tests := []struct {
		name string
		ev   model.Event
		want bool // matches and crosses the threshold
	}{
		{"dump", model.Event{SensitiveRead: []string{"email"}, Complete: true, Rows: 5000, Calls: 1}, true},
		{"unclassified dump", model.Event{Rows: 5000, Calls: 1}, true},
		{"login lookups", model.Event{SensitiveRead: []string{"password_hash"}, Complete: true, Rows: 2000, Calls: 2000}, false},
		{"no sensitive column", model.Event{Complete: true, Rows: 5000, Calls: 1}, false},
		{"no calls", model.Event{SensitiveRead: []string{"email"}, Complete: true, Rows: 5000}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := r.Match(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			got := m && r.Condition.Threshold.Op.Compare(float64(tt.ev.RowsPerCall()), r.Condition.Threshold.Value)
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	labels, ann, err := r.Expand(TemplateData{Labels: map[string]string{"columns": "email", "table": "public.users", "role": "mallory"}, Value: 5000})
	if err != nil {
		t.Fatal(err)
	}
	if want := "Bulk read of sensitive columns email of public.users by mallory"; ann["summary"] != want {
		t.Errorf("summary: got %q, want %q", ann["summary"], want)
	}
	if labels["role"] != "mallory" {
		t.Errorf("labels: got %v", labels)
	}
}

func TestFullFile(t *testing.T) {
	f, errs := ParseFile("testdata/full.good.yaml")
	if errs != nil {
		t.Fatal(errs)
	}
	r := f.Groups[0].Rules[0]
	if r.Aggregate.Window != 10*time.Minute || r.Aggregate.Function != AggSum || strings.Join(r.Aggregate.By, ",") != "database,relation,role" {
		t.Errorf("aggregate: got %+v", r.Aggregate)
	}
	x := r.Exceptions
	if len(x) != 4 || x[0].Expires != time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC) || x[1].ClientCIDR.String() != "10.20.0.0/16" ||
		!x[2].HasQueryID || x[2].QueryID != 1234567890 || x[3].Expires != time.Date(2027, 1, 31, 18, 0, 0, 0, time.UTC) {
		t.Errorf("exceptions: got %+v", x)
	}
	fs := f.Groups[0].Rules[2].Condition.FirstSeen
	if fs == nil || fs.LearnFor != 7*24*time.Hour || fs.ForgetAfter != 90*24*time.Hour {
		t.Errorf("first_seen: got %+v", fs)
	}
	nk := f.Groups[0].Rules[3]
	if c := nk.Condition; c.FirstSeen == nil || c.Threshold == nil || c.Threshold.Value != 1 ||
		strings.Join(c.FirstSeen.LearnPer, ",") != "database,role" || c.FirstSeen.Remember != RememberLearning ||
		nk.Aggregate == nil || strings.Join(nk.Aggregate.By, ",") != "database,role" {
		t.Errorf("first_seen with a threshold: got %+v, %+v", c.FirstSeen, c.Threshold)
	}
	if m := f.Groups[0].Rules[1].Mode; m != ModeShadow {
		t.Errorf("mode: got %q", m)
	}
	if m := f.Groups[1].Rules[0].Mode; m != ModePage {
		t.Errorf("default mode: got %q", m)
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"10m", 10 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"1.5h", 90 * time.Minute, true},
		{"1d", 24 * time.Hour, true},
		{"2w", 14 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"0s", 0, true},
		{"", 0, false},
		{"10x", 0, false},
		{"-1m", 0, false},
		{"1 hour", 0, false},
		{"99999999999999y", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, errs := Parse("fuzz.yaml", data)
		if (file == nil) == (errs == nil) {
			t.Fatalf("got file %v and errors %v; want exactly one", file != nil, errs)
		}
		for _, e := range errs {
			if e.Line < 1 {
				t.Errorf("error without a line: %v", e)
			}
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	f, errs := ParseFile("testdata/full.good.yaml")
	if errs != nil {
		b.Fatal(errs)
	}
	r := f.Groups[0].Rules[0] // event.source == "statements" && size(event.sensitive_read) > 0
	ev := model.Event{
		Source: "statements", Database: "app", Role: "app", Relation: "public.users",
		SensitiveRead: []string{"email", "password_hash"}, Complete: true, Rows: 1, Calls: 1,
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := r.Match(ev); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// quoteLiteral must read back as the same string whatever standard_conforming_strings
// is: a backslash in a name an intruder chose must not end the literal early.
func TestQuoteLiteral(t *testing.T) {
	for in, want := range map[string]string{
		"mallory":          `'mallory'`,
		"o'brien":          `'o''brien'`,
		`a\b`:              `E'a\\b'`,
		`\' OR true --`:    `E'\\'' OR true --'`,
		"x'; DROP TABLE u": `'x''; DROP TABLE u'`,
	} {
		if got := quoteLiteral(in); got != want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", in, got, want)
		}
	}
}
