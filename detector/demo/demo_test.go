package demo

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemoPagesOnTheDump runs what `make demo` runs, on fewer users.
func TestDemoPagesOnTheDump(t *testing.T) {
	var out bytes.Buffer
	if err := Run(t.Context(), Options{Users: 20_000, Out: &out}); err != nil {
		t.Fatalf("demo failed: %v\noutput:\n%s", err, out.String())
	}
	for _, want := range []string{
		`"state":"firing"`, `"role":"mallory"`, `"value":20000`,
		"paged: SensitiveBulkRead", "removed the throwaway PostgreSQL",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
