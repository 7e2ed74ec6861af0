package detector

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/notify"
	"github.com/pgtripwire/pgtripwire/model"
)

// stageRecorder is a notify stage that records what it is handed.
type stageRecorder struct {
	got     []string // fingerprints
	written error    // what WaitWritten returns
}

func (s *stageRecorder) Exec(_ context.Context, ts ...notify.Transition) ([]notify.Transition, error) {
	for _, t := range ts {
		s.got = append(s.got, t.Alert.Fingerprint)
	}
	return ts, nil
}

func (s *stageRecorder) WaitWritten(context.Context) error { return s.written }

// onePerEvent fires one alert per event, named after its role, and resolves on each
// tick the alerts it fired.
type onePerEvent struct {
	evaluated int
	fired     []string
}

func (o *onePerEvent) Eval(now time.Time, ev model.Event) []model.Alert {
	o.evaluated++
	o.fired = append(o.fired, ev.Role)
	return []model.Alert{{Time: now, State: model.StateFiring, Rule: "R", Severity: model.SeverityInfo, Fingerprint: ev.Role}}
}

func (o *onePerEvent) Tick(now time.Time) []model.Alert {
	var resolved []model.Alert
	for _, fp := range o.fired {
		resolved = append(resolved, model.Alert{Time: now, State: model.StateResolved, Rule: "R", Severity: model.SeverityInfo, Fingerprint: fp})
	}
	o.fired = nil
	return resolved
}

func (o *onePerEvent) Rules() map[string]model.Severity {
	return map[string]model.Severity{"R": model.SeverityInfo}
}

func TestPipelineHandsEveryTransitionOverOnceInOrder(t *testing.T) {
	stage, eval := &stageRecorder{}, &onePerEvent{}
	reg := prometheus.NewRegistry()
	p := newPipeline(eval, stage, time.Now, zap.NewNop(), reg)
	if err := p.HandleEvents(t.Context(), []model.Event{{Role: "a"}, {Role: "b"}}); err != nil {
		t.Fatal(err)
	}
	p.tick(t.Context())
	if err := p.HandleEvents(t.Context(), []model.Event{{Role: "c"}}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b", "a", "b", "c"}; !slices.Equal(stage.got, want) {
		t.Fatalf("got %v, want %v: firing a, b, their resolutions, firing c", stage.got, want)
	}
	if eval.evaluated != 3 {
		t.Fatalf("evaluated %d events, want 3 (none twice)", eval.evaluated)
	}
}

// The WAL source confirms a position only after WaitWritten: the pipeline must answer
// with the notify stage's verdict, never on its own.
func TestPipelineWaitWrittenAsksTheStage(t *testing.T) {
	unwritten := errors.New("queued in memory")
	p := newPipeline(&onePerEvent{}, &stageRecorder{written: unwritten}, time.Now, zap.NewNop(), prometheus.NewRegistry())
	if err := p.WaitWritten(t.Context()); !errors.Is(err, unwritten) {
		t.Fatalf("WaitWritten: got %v, want the stage's answer", err)
	}
}

// With the real notifier behind it, HandleEvents returns with the alert line on disk
// and the detector ready.
func TestPipelineWritesTheAlertLogBeforeReturning(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Config{StateDir: dir}
	cfg.Alerts.File = filepath.Join(dir, "alerts.jsonl")
	reg := prometheus.NewRegistry()
	h := health.New(reg)
	deps := Deps{Logger: zap.NewNop(), Registry: reg, Now: time.Now}
	n, p, err := newAlerting(cfg, deps, h, &onePerEvent{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := p.HandleEvents(t.Context(), []model.Event{{Role: "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitWritten(t.Context()); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(cfg.Alerts.File); !strings.Contains(string(data), `"fingerprint":"a"`) {
		t.Fatalf("alert log: got %q, want a's firing line", data)
	}
	if ok, why := h.Ready(); !ok {
		t.Fatalf("got unready (%v), want ready", why)
	}
	want := `# HELP pgtripwire_alerts_total Alerts that started firing, by rule and severity.
# TYPE pgtripwire_alerts_total counter
pgtripwire_alerts_total{rule="R",severity="info"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pgtripwire_alerts_total"); err != nil {
		t.Fatal(err)
	}
}

// COPY progress events carry a running total, observed while the COPY runs: counting
// each would multiply the COPY's rows in pgtripwire_sensitive_rows_read_total, which
// counts it once from its statement.
func TestPipelineCountsRowsReadOncePerCopy(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := newPipeline(&onePerEvent{}, &stageRecorder{}, time.Now, zap.NewNop(), reg)
	read := func(source model.Source, rows int64, running time.Duration) model.Event {
		return model.Event{Source: source, Database: "app", Relation: "public.users", Role: "r",
			SensitiveRead: []string{"email"}, Rows: rows, Calls: 1, Running: running}
	}
	if err := p.HandleEvents(context.Background(), []model.Event{
		read("copy", 1000, time.Second), read("copy", 2000, 2*time.Second), read("statements", 2000, 0),
	}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(p.rowsRead.WithLabelValues("statements", "", "", "app", "public.users", "r")); got != 2000 {
		t.Errorf("rows read from the statement: got %v, want 2000", got)
	}
	if n := testutil.CollectAndCount(p.rowsRead); n != 1 {
		t.Errorf("got %d rows-read series, want only the statement's (none for COPY progress)", n)
	}
}
