package engine

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// v1Pack is the pack testdata/rules-v1.json was saved with, by the engine of
// commit a1d37a8: one rule of every kind, windows of sum and count_distinct,
// a learned baseline, a first-seen key over a string, a bool and an int, and
// two firing alerts.
const v1Pack = sweepRule + `      - name: NewClient
        description: d
        severity: info
        match: 'has(event.client_addr)'
        condition:
          first_seen: {key: [role, client_addr, complete, query_id], learn_for: 1h}
      - name: Volume
        description: d
        severity: warning
        match: 'size(event.sensitive_read) > 0'
        aggregate: {function: sum, field: rows, window: 10m, by: [role]}
        condition:
          baseline: {learn_for: 2h, z_score: 3, floor: 1000000}
      - name: ManyTables
        description: d
        severity: warning
        match: 'size(event.sensitive_read) > 0'
        aggregate: {function: count_distinct, field: relation, window: 1h, by: [role]}
        condition:
          threshold: {op: ">", value: 20}
      - name: Bulk
        description: d
        severity: critical
        match: 'event.source == "statements" && size(event.sensitive_read) > 0'
        condition:
          threshold: {field: rows_per_call, op: ">=", value: 10000}
`

// TestRestoreVersion1StateFile restores a state file written before the
// engine was split by concern: a detector upgraded in place must keep its
// firing alerts, windows, baselines and first-seen keys. The file was saved
// at 2h+1s after a read of 20,000 rows by role a at 2h.
func TestRestoreVersion1StateFile(t *testing.T) {
	data, err := os.ReadFile("testdata/rules-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	h := &harness{t: t, reg: prometheus.NewRegistry()}
	h.e, err = New(parseRules(t, v1Pack), Options{StatePath: path, Logger: zap.New(core), Registerer: h.reg})
	if err != nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 {
		t.Fatalf("warnings: got %v, want none", logs.All())
	}

	var firing []string
	for _, a := range h.e.Firing() {
		firing = append(firing, a.Rule+" "+a.Fingerprint)
	}
	slices.Sort(firing)
	if want := []string{"Bulk d02d5d11d06d3cb1", "Sweep f188042ebe251cfa"}; !slices.Equal(firing, want) {
		t.Errorf("firing after restore: got %q, want %q", firing, want)
	}
	for _, rs := range h.e.rules {
		if rs.startedAt.IsZero() {
			t.Errorf("%s: learning start not restored", rs.rule.Name)
		}
		if rs.rule.Name == "Volume" {
			rs.eachGroup(func(g *group) {
				if g.labels["role"] == "app" && g.base.samples != 12 {
					t.Errorf("Volume baseline of app: got %d samples, want 12", g.base.samples)
				}
			})
		}
	}

	known := page("app", 1)
	known.ClientAddr, known.QueryID = "10.0.0.1", 42
	h.eval(2*time.Hour+2*time.Second, page("a", 20000)) // the same read replayed: no second firing
	h.eval(2*time.Hour+3*time.Second, known)            // seen while learning: not new
	stranger := known
	stranger.ClientAddr = "198.51.100.9"
	h.eval(2*time.Hour+4*time.Second, stranger) // after learning: new
	h.tickTo(2*time.Hour+5*time.Second, 2*time.Hour+11*time.Minute)
	checkTransitions(t, h.got,
		"firing NewClient @2h0m4s {client_addr=198.51.100.9,complete=true,query_id=42,role=app} 1",
		"resolved Bulk @2h5m2s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 20000",
		"resolved NewClient @2h5m4s {client_addr=198.51.100.9,complete=true,query_id=42,role=app} 1",
		// The window restored: the bucket of the reads of 2h and 2h+2s leaves it at 2h10m.
		"resolved Sweep @2h10m0s {columns=email,password_hash,database=app,role=a,source=statements,table=public.users} 40000",
	)
}

func TestSaveReportsFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	h := newHarness(t, sweepRule, Options{StatePath: filepath.Join(dir, "rules.json")})
	if err := os.WriteFile(dir, nil, 0o600); err != nil { // the state directory is a file now
		t.Fatal(err)
	}
	if err := h.e.Save(t0); err == nil {
		t.Fatal("Save: got no error, want the write's")
	}
	if got := testutil.ToFloat64(h.e.m.saves.WithLabelValues("error")); got != 1 {
		t.Errorf("saves{result=error}: got %g, want 1", got)
	}
}
