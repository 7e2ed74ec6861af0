package classify_test

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/pgtripwire/pgtripwire/detector/catalog"
	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// corpusEntry is one statement of testdata/corpus.yaml with its expected
// verdicts.
type corpusEntry struct {
	SQL                 string   `yaml:"sql"`
	Operation           string   `yaml:"operation"`
	Relations           []string `yaml:"relations"`
	SensitiveRead       []string `yaml:"sensitive_read"`
	SensitiveReferenced []string `yaml:"sensitive_referenced"`
	// Access and Shapes are compared always: absent means none.
	Access   map[string]string `yaml:"access"`
	Shapes   []string          `yaml:"shapes"`
	Complete bool              `yaml:"complete"`
	Benign   bool              `yaml:"benign"`
	Note     string            `yaml:"note"`
	line     int
}

// corpusSensitive is the configuration the corpus expects; schema.sql
// creates the tables.
var corpusSensitive = map[string][]string{
	"public.users":  {"email", "username", "password_hash"},
	"auth.accounts": {"login", "pw"},
}

func loadCorpus(t *testing.T) []corpusEntry {
	t.Helper()
	data, err := os.ReadFile("testdata/corpus.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.SequenceNode {
		t.Fatal("corpus.yaml: want a list of entries")
	}
	var entries []corpusEntry
	for _, n := range doc.Content[0].Content {
		var e corpusEntry
		dec := yaml.NewDecoder(strings.NewReader(mustMarshal(t, n)))
		dec.KnownFields(true)
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("corpus.yaml:%d: %v", n.Line, err)
		}
		e.line = n.Line
		entries = append(entries, e)
	}
	return entries
}

func mustMarshal(t *testing.T, n *yaml.Node) string {
	t.Helper()
	out, err := yaml.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestCorpus classifies every statement of testdata/corpus.yaml against the
// catalog of a real database built from testdata/schema.sql (views, a
// materialized view, SQL and PL/pgSQL functions, partitions, inheritance).
// Every entry must pass.
func TestCorpus(t *testing.T) {
	entries := loadCorpus(t)
	benign := 0
	for _, e := range entries {
		if e.Benign {
			benign++
		}
	}
	if len(entries) < 90 || benign < 30 {
		t.Errorf("corpus has %d statements, %d benign: want at least 90 and 30", len(entries), benign)
	}

	schema, err := os.ReadFile("testdata/schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	db := pgtest.NewDatabase(t)
	db.Exec(t, string(schema))
	snap, err := catalog.Load(t.Context(), db.Conn(t, "postgres"), corpusSensitive)
	if err != nil {
		t.Fatal(err)
	}
	if missing := snap.Missing(); len(missing) > 0 {
		t.Fatalf("schema.sql lacks configured tables or columns: %q", missing)
	}

	for _, e := range entries {
		got := classify.Classify(e.SQL, snap, []string{"$user", "public"}, "app")
		var errs []string
		if got.Operation != e.Operation {
			errs = append(errs, "operation "+got.Operation+", want "+e.Operation)
		}
		if e.Relations != nil && !sameSet(got.Relations, e.Relations) {
			errs = append(errs, "relations "+strings.Join(got.Relations, ",")+", want "+strings.Join(e.Relations, ","))
		}
		if !sameSet(got.SensitiveRead, e.SensitiveRead) {
			errs = append(errs, "read "+strings.Join(got.SensitiveRead, ",")+", want "+strings.Join(e.SensitiveRead, ","))
		}
		if !sameSet(got.SensitiveReferenced, e.SensitiveReferenced) {
			errs = append(errs, "referenced "+strings.Join(got.SensitiveReferenced, ",")+", want "+strings.Join(e.SensitiveReferenced, ","))
		}
		if !maps.Equal(got.Access, e.Access) {
			errs = append(errs, fmt.Sprintf("access %v, want %v", got.Access, e.Access))
		}
		if !sameSet(got.Shapes, e.Shapes) {
			errs = append(errs, "shapes "+strings.Join(got.Shapes, ",")+", want "+strings.Join(e.Shapes, ","))
		}
		if got.Complete != e.Complete {
			errs = append(errs, "complete "+map[bool]string{true: "true", false: "false"}[got.Complete]+" (problems "+strings.Join(got.Problems, "; ")+")")
		}
		if e.Benign && (len(e.SensitiveRead) > 0 || !e.Complete) && e.Note == "" {
			errs = append(errs, "a benign entry that reads or is incomplete needs a note saying why")
		}
		if len(errs) > 0 {
			t.Errorf("corpus.yaml:%d: %q:\n\t%s", e.line, e.SQL, strings.Join(errs, "\n\t"))
		}
	}
}

func sameSet(got, want []string) bool {
	return len(got) == 0 && len(want) == 0 || slices.Equal(got, slices.Sorted(slices.Values(want)))
}
