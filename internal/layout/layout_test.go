package layout

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/pgtripwire/pgtripwire/"

// deps lists the packages patterns import, directly or not, as `go list -deps` does
// (test files excluded: a production build).
func deps(t *testing.T, patterns ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-deps"}, patterns...)...).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", strings.Join(patterns, " "), err)
	}
	return strings.Fields(string(out))
}

func TestRulesImportNothingOfTheDaemon(t *testing.T) {
	for _, p := range deps(t, module+"rules/...") {
		if strings.HasPrefix(p, module+"detector/") {
			t.Errorf("a package under rules/ imports %s: the rule engine must stand alone (shared values belong in model/)", p)
		}
	}
}

func TestNoTestKitInProductionCode(t *testing.T) {
	for _, p := range deps(t, module+"cmd/...", module+"detector/...", module+"rules/...", module+"model/...") {
		if strings.HasPrefix(p, module+"internal/testkit/") {
			t.Errorf("production code imports the test kit %s", p)
		}
	}
}
