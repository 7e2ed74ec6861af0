package detector

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/notify"
	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/engine"
)

// ruleStateComponent is the health component of the rule state's saves: a detector
// that cannot save what is firing would, after a restart, fire it twice or never
// resolve it, so it is not ready until a save succeeds again (the engine retries at
// every tick).
const ruleStateComponent = "rule_state"

// reconcileAlertLog compares the alert log's own record with what the rule engine
// restored, so that every episode has exactly one firing and one resolved line across
// a restart whose state was lost, damaged or stale (a failed save):
//   - an alert the log says is firing and the engine does not hold (its state was lost,
//     or the save after it fired failed) is resolved now: the lines returned are
//     written before anything else;
//   - an alert the engine holds as firing whose resolution the log already has (the
//     save after it resolved failed) is forgotten, so that it is not resolved twice
//     and a new read fires a new episode.
//
// Only the alert log's current file is read: alerts whose lines are in rotated files
// are the engine's alone. Without an alert log file (stdout only) there is nothing to
// compare.
func reconcileAlertLog(path string, e *engine.Engine, now time.Time, log *zap.Logger) ([]model.Alert, error) {
	if path == "" {
		return nil, nil
	}
	last, skipped, err := notify.ReadAlertLogStates(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("compare the alert log with the rule state: %w", err)
	}
	if skipped > 0 {
		log.Warn("alert log lines that are not alerts were skipped (a torn last line after a crash?)",
			zap.String("path", path), zap.Int("lines", skipped))
	}
	held := e.Held()
	resolvedInLog := make(map[string]bool)
	var stale []model.Alert
	for fp, a := range last {
		switch {
		case a.State == model.StateFiring && !held[fp]:
			a.State, a.Time = model.StateResolved, now
			stale = append(stale, a)
		case a.State == model.StateResolved && held[fp]:
			resolvedInLog[fp] = true
		}
	}
	slices.SortFunc(stale, func(a, b model.Alert) int { return strings.Compare(a.Fingerprint, b.Fingerprint) })
	if len(stale) > 0 {
		log.Warn("alerts the alert log says are firing are not in the rule state (lost, or not saved before the restart): resolved now",
			zap.String("path", path), zap.Int("alerts", len(stale)))
	}
	if n := e.Forget(resolvedInLog); n > 0 {
		log.Warn("alerts the rule state held as firing were already resolved in the alert log (a save failed before the restart): forgotten",
			zap.String("path", path), zap.Int("alerts", n))
	}
	return stale, nil
}
