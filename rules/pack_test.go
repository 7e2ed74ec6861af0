package rules

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/rules/ruletest"
)

// The pack's own rule tests (rules/default_test.yml): every rule fires on what it is for
// and stays silent on the traffic next to it. The file names the pack on disk, which is
// the very file the binary embeds.
func TestDefaultPackRuleTests(t *testing.T) {
	var out bytes.Buffer
	ok, errs := ruletest.Run(&out, "default_test.yml")
	if len(errs) > 0 {
		t.Fatalf("default_test.yml cannot run:\n%v", errs)
	}
	if !ok {
		t.Fatalf("rule tests of the default pack failed:\n%s", out.String())
	}
}

// Every rule of the pack has a case in default_test.yml where it fires and one where it
// must stay silent, so a rule nobody tests cannot be added.
func TestDefaultPackEveryRuleIsTested(t *testing.T) {
	f, errs := LoadDefaultPack()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	tests, errs := ruletest.ParseFile("default_test.yml")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	positive, negative := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, e := range tc.Expect {
			if len(e.Firing) > 0 {
				positive[e.Rule] = true
			} else {
				negative[e.Rule] = true
			}
		}
	}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if !positive[r.Name] {
				t.Errorf("rule %s has no test in default_test.yml where it fires", r.Name)
			}
			if !negative[r.Name] {
				t.Errorf("rule %s has no test in default_test.yml where it stays silent (firing: [])", r.Name)
			}
		}
	}
}

// The runbook is what the on-call engineer opens from an alert: every rule of the pack
// links to its own section of docs/runbook.md, and that section exists.
func TestDefaultPackRulesHaveRunbookSections(t *testing.T) {
	f, errs := LoadDefaultPack()
	if len(errs) > 0 {
		t.Fatalf("the default pack does not load:\n%v", errs)
	}
	runbook, err := os.ReadFile("../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^## (\S+)$`).FindAllStringSubmatch(string(runbook), -1) {
		headings[m[1]] = true
	}
	const base = "https://github.com/pgtripwire/pgtripwire/blob/main/docs/runbook.md#"
	n := 0
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			n++
			if !headings[r.Name] {
				t.Errorf("rule %s has no section \"## %s\" in docs/runbook.md", r.Name, r.Name)
			}
			if got, want := r.Annotations["runbook_url"], base+strings.ToLower(r.Name); got != want {
				t.Errorf("rule %s: runbook_url = %q, want %q", r.Name, got, want)
			}
			if !strings.Contains(r.Description, "Tune") {
				t.Errorf("rule %s: the description does not say how to tune it (no \"Tune\")", r.Name)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("rule %s: summary and description annotations are required in the pack", r.Name)
			}
		}
	}
	if n < 10 {
		t.Errorf("the default pack has %d rules; want the whole pack", n)
	}
}
