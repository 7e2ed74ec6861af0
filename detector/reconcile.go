package detector

import (
	"errors"
	"fmt"
	"io/fs"
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
// a restart whose state was lost, damaged or stale (a failed save, kill -9 before the
// next save):
//   - an alert the log says is firing and the engine does not hold is adopted by the
//     engine (engine.Adopt): a rule firing it again continues the episode without a
//     second firing line, and it is resolved, once, when none does;
//   - an alert the engine holds as firing whose resolution the log already has is
//     forgotten, so that it is not resolved twice and a new read fires a new episode.
//
// Only the alert log's current file is read: alerts whose lines are in rotated files
// are the engine's alone. Without an alert log file (stdout only) there is nothing to
// compare.
func reconcileAlertLog(path string, e *engine.Engine, now time.Time, log *zap.Logger) error {
	if path == "" {
		return nil
	}
	last, skipped, err := notify.ReadAlertLogStates(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("compare the alert log with the rule state: %w", err)
	}
	if skipped > 0 {
		log.Warn("alert log lines that are not alerts were skipped (a torn last line after a crash?)",
			zap.String("path", path), zap.Int("lines", skipped))
	}
	held := e.Held()
	resolvedInLog := make(map[string]bool)
	var adopt []model.Alert
	for fp, a := range last {
		switch {
		case a.State == model.StateFiring && !held[fp]:
			adopt = append(adopt, a)
		case a.State == model.StateResolved && held[fp]:
			resolvedInLog[fp] = true
		}
	}
	if len(adopt) > 0 {
		e.Adopt(adopt, now)
		log.Warn("alerts the alert log says are firing are not in the rule state (lost, or not saved before the restart): "+
			"they go on if their rules fire them again, else they are resolved after alerts.resolve_after",
			zap.String("path", path), zap.Int("alerts", len(adopt)))
	}
	if n := e.Forget(resolvedInLog); n > 0 {
		log.Warn("alerts the rule state held as firing were already resolved in the alert log (a save failed before the restart): forgotten",
			zap.String("path", path), zap.Int("alerts", n))
	}
	return nil
}
