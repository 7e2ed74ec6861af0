package statements

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/classify"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
)

// Memory follows pg_stat_statements, not the history of every statement ever seen.
func TestPruneForgetsWhatLeftPgStatStatements(t *testing.T) {
	reg := prometheus.NewRegistry()
	now := time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)
	src := New(Config{Now: func() time.Time { return now }}, &sourcetest.Recorder{}, zap.NewNop(), reg)
	text := "SELECT 1"
	_, commit := src.tracker.observe([]entry{e(1, 1, 1)})
	commit()
	for _, id := range []int64{1, 2} {
		src.texts[id] = &text
		src.results[id] = classify.Result{Complete: true}
	}
	src.textAttempts[3] = 2
	src.texts[3] = nil
	src.named.declare(10, classify.Result{Operation: classify.OperationDeclareCursor, Name: "old"}, "", 1, now.Add(-2*time.Hour))
	src.named.declare(10, classify.Result{Operation: classify.OperationDeclareCursor, Name: "new"}, "", 1, now)

	for range 59 {
		src.prune()
	}
	if len(src.texts) != 3 {
		t.Fatalf("pruned after 59 polls, want the work done once a minute of polls (60)")
	}
	src.prune()
	if _, ok := src.texts[1]; !ok || len(src.texts) != 1 || len(src.results) != 1 || len(src.textAttempts) != 0 {
		t.Fatalf("got texts %v results %v attempts %v, want only queryid 1, which is still live",
			src.texts, src.results, src.textAttempts)
	}
	if _, ok := src.named.byKey[namedKey{userID: 10, name: "old"}]; ok {
		t.Error("a cursor declared two hours ago is still remembered")
	}
	if _, ok := src.named.byKey[namedKey{userID: 10, name: "new"}]; !ok {
		t.Error("a cursor declared now was forgotten")
	}
}
