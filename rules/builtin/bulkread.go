// Package builtin holds the rules compiled into pgtripwire before the rule language
// exists: SensitiveBulkRead. The rule engine replaces it; sources do not know it exists
// (they emit events, the detector hands events to whatever evaluator it was given).
//
// It is not a general state machine: it keeps just enough state (one entry per firing
// alert) to fire once and resolve once per alert.
package builtin

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/alert"
	"github.com/pgtripwire/pgtripwire/detector/event"
)

// BulkReadRuleName is the rule (and alertname) of the bulk-read detection.
const BulkReadRuleName = "SensitiveBulkRead"

// BulkReadRunbookURL documents what the on-call engineer should do.
const BulkReadRunbookURL = "https://github.com/pgtripwire/pgtripwire/blob/main/docs/runbooks/SensitiveBulkRead.md"

// BulkRead fires when one statement delta reads sensitive columns and returns at least
// MinRowsPerCall rows per execution: the shape of a dump (`SELECT email, password_hash
// FROM users`), not of a login lookup. An alert is grouped by database, table, columns,
// role and, when known, client address and application; it resolves once no matching
// event has been seen for ResolveAfter.
//
// A statement that could not be fully classified counts as reading: one that touched a
// sensitive table counts as reading it, one whose tables are unknown (an event without
// a relation) as reading something that may be sensitive. An unparseable statement is
// never evidence of safety.
//
// BulkRead is not safe for concurrent use; the detector serialises evaluation.
type BulkRead struct {
	minRowsPerCall int64
	firing         firingSet
}

// NewBulkRead returns the rule with its thresholds.
func NewBulkRead(minRowsPerCall int64, resolveAfter time.Duration) *BulkRead {
	return &BulkRead{
		minRowsPerCall: minRowsPerCall,
		firing:         newFiringSet(resolveAfter),
	}
}

// Rules lists the rules this evaluator may raise, with their severity, so that their
// metrics can exist at zero.
func (r *BulkRead) Rules() map[string]alert.Severity {
	return map[string]alert.Severity{BulkReadRuleName: alert.SeverityCritical}
}

// Eval returns the transitions caused by ev at now: a firing alert the first time a
// group matches, nothing while it keeps firing.
func (r *BulkRead) Eval(now time.Time, ev event.Event) []alert.Alert {
	if !r.matches(ev) {
		return nil
	}
	labels := bulkReadLabels(ev)
	fp := alert.Fingerprint(BulkReadRuleName, labels)
	if r.firing.refresh(fp, now, float64(ev.Rows)) {
		return nil
	}
	a := alert.Alert{
		Time:        now,
		State:       alert.StateFiring,
		Rule:        BulkReadRuleName,
		Severity:    alert.SeverityCritical,
		Fingerprint: fp,
		Value:       float64(ev.Rows),
		Labels:      labels,
		Annotations: r.annotations(ev, labels),
	}
	return r.firing.fire(a, now)
}

// Tick resolves the alerts whose condition has been quiet for ResolveAfter at now.
func (r *BulkRead) Tick(now time.Time) []alert.Alert {
	return r.firing.resolveQuiet(now)
}

func (r *BulkRead) matches(ev event.Event) bool {
	// Changes are not reads: WAL events are the change rules' business.
	if ev.Source == event.SourceWAL || ev.Calls <= 0 || ev.RowsPerCall() < r.minRowsPerCall {
		return false
	}
	return len(ev.SensitiveRead) > 0 || !ev.Complete
}

func bulkReadLabels(ev event.Event) map[string]string {
	labels := map[string]string{alert.LabelSource: string(ev.Source)}
	set := func(k, v string) {
		if v != "" {
			labels[k] = v
		}
	}
	set(alert.LabelTable, ev.Relation)
	set(alert.LabelDatabase, ev.Database)
	set(alert.LabelRole, ev.Role)
	set(alert.LabelClientAddr, ev.ClientAddr)
	set(alert.LabelApplication, ev.Application)
	set(alert.LabelColumns, strings.Join(sortedCopy(ev.SensitiveRead), ","))
	return labels
}

func (r *BulkRead) annotations(ev event.Event, labels map[string]string) map[string]string {
	who := labels[alert.LabelRole]
	if who == "" {
		who = "an unknown role"
	}
	if addr := labels[alert.LabelClientAddr]; addr != "" {
		who += " from " + addr
	}
	var summary string
	switch {
	case ev.Relation == "":
		summary = fmt.Sprintf("Bulk read by %s through a statement that could not be classified "+
			"(its table is unknown; it may be a sensitive one)", who)
	case !ev.Complete:
		summary = fmt.Sprintf("Bulk read by %s through a statement that could not be fully classified, "+
			"touching sensitive table %s", who, ev.Relation)
	default:
		summary = fmt.Sprintf("Bulk read of sensitive columns %s of %s by %s",
			labels[alert.LabelColumns], ev.Relation, who)
	}
	description := fmt.Sprintf(
		"%d rows in %d call(s) (%d rows per call, threshold %d) of query %d in database %s. "+
			"Find the statement with `SELECT query FROM pg_stat_statements WHERE queryid = %d`; "+
			"if the read is not expected, terminate the role's sessions "+
			"(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'`) "+
			"and revoke its access before investigating.",
		ev.Rows, ev.Calls, ev.RowsPerCall(), r.minRowsPerCall, ev.QueryID, ev.Database, ev.QueryID,
		strings.ReplaceAll(ev.Role, "'", "''"))
	return map[string]string{
		alert.AnnotationSummary:     summary,
		alert.AnnotationDescription: description,
		alert.AnnotationRunbookURL:  BulkReadRunbookURL,
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return slices.Compact(c)
}
