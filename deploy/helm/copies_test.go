package helm_test

import (
	"bytes"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Helm reads no file outside the chart's directory, so the chart holds copies of the
// repository's alert rules and dashboards; these are their originals, relative to this
// package. Copies rather than symlinks or a generation step: a chart directory that
// `helm package` and `helm install ./deploy/helm/pgtripwire` take as it is on every
// platform, and a test that fails the moment a copy is stale.
const (
	alertRules       = "../prometheus/pgtripwire-alerts.yml"
	alertRulesCopy   = chartDir + "/files/pgtripwire-alerts.yml"
	dashboardsGlob   = "../../dashboards/*.json"
	dashboardsCopies = chartDir + "/files/dashboards"
)

var update = flag.Bool("update", false, "copy the repository's alert rules and dashboards into the chart")

func repoDashboards(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(dashboardsGlob)
	if err != nil || len(files) == 0 {
		t.Fatalf("%s: %v %v", dashboardsGlob, files, err)
	}
	return files
}

// TestChartCopiesAreCurrent fails when the chart's copy of a file differs from the
// repository's, or a dashboard was added or removed without the chart; `go test
// ./deploy/helm/ -run TestChartCopiesAreCurrent -update` brings them in step.
func TestChartCopiesAreCurrent(t *testing.T) {
	want := map[string]string{alertRulesCopy: alertRules} // copy → original
	for _, path := range repoDashboards(t) {
		want[filepath.Join(dashboardsCopies, filepath.Base(path))] = path
	}
	copies, err := filepath.Glob(filepath.Join(dashboardsCopies, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range copies {
		if _, ok := want[c]; ok {
			continue
		}
		if *update {
			if err := os.Remove(c); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s is in the chart but not in %s: run go test ./deploy/helm/ -run TestChartCopiesAreCurrent -update", c, dashboardsGlob)
	}
	for _, c := range slices.Sorted(maps.Keys(want)) {
		orig, err := os.ReadFile(want[c])
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(c)
		if err == nil && bytes.Equal(got, orig) {
			continue
		}
		if *update {
			if err := os.WriteFile(c, orig, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s differs from %s (or is missing: %v): run go test ./deploy/helm/ -run TestChartCopiesAreCurrent -update", c, want[c], err)
	}
}
