package detector_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/source/registry"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/toysource"
)

// Adding a source is one package (internal/testkit/toysource) and one line in the table
// of sources: its configuration section, health, metrics and events then work like
// every other source's, and a rule can page on what it sees.
func TestANewSourceIsOnePackageAndOneLine(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	dir := t.TempDir()
	rules := filepath.Join(dir, "toy.yml")
	if err := os.WriteFile(rules, []byte(`groups:
  - name: toy
    rules:
      - name: ToySession
        description: A session the toy source reports.
        severity: warning
        match: event.source == "toy" && event.kind == "toy_session"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "pgtripwire.yaml")
	if err := os.WriteFile(file, fmt.Appendf(nil, `database: {dsn: %q}
sensitive: [{table: public.users, columns: [email]}]
http: {listen: "127.0.0.1:0"}
alerts: {file: alerts.jsonl, stdout: false}
rules: {default_pack: false, files: [toy.yml]}
sources:
  catalog: {enabled: false}
  toy: {enabled: true, interval: 100ms}
`, db.SuperuserDSN()), 0o600); err != nil {
		t.Fatal(err)
	}

	sources := append(slices.Clone(registry.Sources), toysource.Definition) // the one line
	cfg, err := config.Load(file, nil, config.WithSources(sources))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(file, nil); err == nil {
		t.Fatal("the same file without the toy source in the table: got no error, want sources.toy unknown")
	}

	r := detectortest.Start(t, cfg)
	if up := r.Gauge(t, "pgtripwire_source_up", map[string]string{"source": "toy"}); up != 1 {
		t.Errorf("pgtripwire_source_up{source=toy}: got %v, want 1", up)
	}

	conn, err := pgx.Connect(t.Context(), db.SuperuserDSN()+"&application_name=toy-intruder")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	a := r.WaitAlert(t, 10*time.Second, "ToySession", nil)
	if a.Labels["source"] != "toy" {
		t.Errorf("got source label %q, want toy", a.Labels["source"])
	}
	if polls := r.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": "toy"}); polls < 1 {
		t.Errorf("pgtripwire_source_polls_total{source=toy}: got %v, want at least 1", polls)
	}
}
