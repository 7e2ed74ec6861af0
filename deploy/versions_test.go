package deploy_test

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/pgversion"
)

// TestComposePostgresIsInTheMatrix: the PostgreSQL the compose stack runs is a
// supported version, and `make test` runs the compatibility suite (which runs
// TestComposeStackPagesOnADump) on every supported version, so on the stack's too.
func TestComposePostgresIsInTheMatrix(t *testing.T) {
	project := loadCompose(t)
	image := regexp.MustCompile(`^postgres:(\d+)`)
	var found int
	for name, svc := range project.Services {
		m := image.FindStringSubmatch(svc.Image)
		if m == nil {
			continue
		}
		found++
		if v, _ := strconv.Atoi(m[1]); !slices.Contains(pgversion.Supported, v) {
			t.Errorf("service %s runs %s: PostgreSQL %d is not among the supported versions %v", name, svc.Image, v, pgversion.Supported)
		}
	}
	if found == 0 {
		t.Fatal("no service of docker-compose.yml runs a postgres:<major> image")
	}

	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^COMPAT_VERSIONS\s*\?=\s*(.*)$`).FindSubmatch(makefile)
	if m == nil {
		t.Fatal("the Makefile sets no COMPAT_VERSIONS")
	}
	var matrix []int
	for _, f := range strings.Fields(string(m[1])) {
		v, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("COMPAT_VERSIONS: %q", f)
		}
		matrix = append(matrix, v)
	}
	if !slices.Equal(matrix, pgversion.Supported) {
		t.Errorf("make test's compatibility suite runs on %v, want every supported version %v", matrix, pgversion.Supported)
	}
	list, err := os.ReadFile("../scripts/compat-tests.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\./deploy\s+TestComposeStackPagesOnADump$`).Match(list) {
		t.Error("scripts/compat-tests.txt lacks ./deploy TestComposeStackPagesOnADump: the stack's init scripts would be tested on one version only")
	}
}
