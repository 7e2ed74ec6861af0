package builtin

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/alert"
	"github.com/pgtripwire/pgtripwire/detector/event"
)

// MassChangeRuleName is the rule (and alertname) of the mass credential change detection.
const MassChangeRuleName = "MassCredentialChange"

// MassChangeRunbookURL documents what the on-call engineer should do.
const MassChangeRunbookURL = "https://github.com/pgtripwire/pgtripwire/blob/main/docs/runbooks/MassCredentialChange.md"

// MassChange fires when one committed transaction updates sensitive columns (email,
// username, password hash) of at least MinRows rows of a table: accounts taken over by
// resetting their hashes or emails, in bulk. An update whose changed columns cannot be
// known (the table lacks REPLICA IDENTITY FULL) counts when it updated that many rows:
// not knowing is not evidence of safety. It resolves after ResolveAfter without another
// such transaction.
//
// MassChange is not safe for concurrent use; the detector serialises evaluation.
type MassChange struct {
	minRows      int64
	resolveAfter time.Duration
	firing       map[string]*firingAlert
}

// NewMassChange returns the rule.
func NewMassChange(minRows int64, resolveAfter time.Duration) *MassChange {
	return &MassChange{minRows: minRows, resolveAfter: resolveAfter, firing: make(map[string]*firingAlert)}
}

// Rules lists the rule and its severity.
func (r *MassChange) Rules() map[string]alert.Severity {
	return map[string]alert.Severity{MassChangeRuleName: alert.SeverityCritical}
}

// Eval returns a firing transition the first time a group matches.
func (r *MassChange) Eval(now time.Time, ev event.Event) []alert.Alert {
	if ev.Source != event.SourceWAL || ev.Operation != "UPDATE" || ev.Rows < r.minRows ||
		(len(ev.Changed) == 0 && ev.Complete) {
		return nil
	}
	labels := map[string]string{alert.LabelSource: string(ev.Source)}
	for k, v := range map[string]string{alert.LabelTable: ev.Relation, alert.LabelDatabase: ev.Database,
		alert.LabelColumns: strings.Join(ev.Changed, ",")} {
		if v != "" {
			labels[k] = v
		}
	}
	fp := alert.Fingerprint(MassChangeRuleName, labels)
	if f, ok := r.firing[fp]; ok {
		f.lastSeen = now
		f.alert.Value = max(f.alert.Value, float64(ev.Rows))
		return nil
	}
	what := "sensitive columns " + labels[alert.LabelColumns]
	if len(ev.Changed) == 0 {
		what = "possibly sensitive columns (the table lacks REPLICA IDENTITY FULL, so which ones is unknown)"
	}
	a := alert.Alert{
		Time: now, State: alert.StateFiring, Rule: MassChangeRuleName, Severity: alert.SeverityCritical,
		Fingerprint: fp, Value: float64(ev.Rows), Labels: labels,
		Annotations: map[string]string{
			alert.AnnotationSummary: fmt.Sprintf("Mass change of %s of %s: %d rows in one transaction",
				what, ev.Relation, ev.Rows),
			alert.AnnotationDescription: fmt.Sprintf(
				"One transaction committed at WAL position %X/%X changed %s in %d rows of %s (threshold %d). "+
					"The WAL does not say who: look for the session in pg_stat_activity and the server log around %s. "+
					"If it is not an expected migration, assume accounts are being taken over: lock the role that did "+
					"it, restore the columns from a backup or the WAL, and force re-authentication.",
				ev.LSN>>32, uint32(ev.LSN), what, ev.Rows, ev.Relation, r.minRows, ev.Time.Format(time.RFC3339)),
			alert.AnnotationRunbookURL: MassChangeRunbookURL,
		},
	}
	r.firing[fp] = &firingAlert{alert: a, lastSeen: now}
	return []alert.Alert{a}
}

// Tick resolves alerts quiet for ResolveAfter.
func (r *MassChange) Tick(now time.Time) []alert.Alert {
	var resolved []alert.Alert
	for _, fp := range slices.Sorted(maps.Keys(r.firing)) {
		f := r.firing[fp]
		if now.Sub(f.lastSeen) < r.resolveAfter {
			continue
		}
		a := f.alert
		a.Time, a.State = now, alert.StateResolved
		resolved = append(resolved, a)
		delete(r.firing, fp)
	}
	return resolved
}
