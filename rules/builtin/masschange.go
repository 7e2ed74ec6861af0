package builtin

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/alert"
	"github.com/pgtripwire/pgtripwire/detector/event"
)

// MassChangeRuleName is the rule (and alertname) of the mass credential change detection.
const MassChangeRuleName = "MassCredentialChange"

// MassChange fires when one committed transaction updates sensitive columns (email,
// username, password hash) of at least MinRows rows of a table: accounts taken over by
// resetting their hashes or emails, in bulk. An update whose changed columns cannot be
// known (the table lacks REPLICA IDENTITY FULL) counts when it updated that many rows:
// not knowing is not evidence of safety. It resolves after ResolveAfter without another
// such transaction.
//
// MassChange is not safe for concurrent use; the detector serialises evaluation.
type MassChange struct {
	name      string
	operation string // the WAL operation it watches
	minRows   int64
	firing    firingSet
}

// NewMassChange returns MassCredentialChange.
func NewMassChange(minRows int64, resolveAfter time.Duration) *MassChange {
	return &MassChange{name: MassChangeRuleName, operation: "UPDATE", minRows: minRows,
		firing: newFiringSet(resolveAfter)}
}

// MassDeleteRuleName and TruncateRuleName are the WAL rules for deletions.
const (
	MassDeleteRuleName = "MassDelete"
	TruncateRuleName   = "SensitiveTableTruncated"
)

// NewMassDelete returns MassDelete: one transaction deleting at least minRows rows of a
// sensitive table (accounts destroyed, or tracks covered).
func NewMassDelete(minRows int64, resolveAfter time.Duration) *MassChange {
	return &MassChange{name: MassDeleteRuleName, operation: "DELETE", minRows: minRows,
		firing: newFiringSet(resolveAfter)}
}

// NewTruncate returns SensitiveTableTruncated: any TRUNCATE of a sensitive table.
func NewTruncate(resolveAfter time.Duration) *MassChange {
	return &MassChange{name: TruncateRuleName, operation: "TRUNCATE", minRows: 1,
		firing: newFiringSet(resolveAfter)}
}

// Rules lists the rule and its severity.
func (r *MassChange) Rules() map[string]alert.Severity {
	return map[string]alert.Severity{r.name: alert.SeverityCritical}
}

// Eval returns a firing transition the first time a group matches.
func (r *MassChange) Eval(now time.Time, ev event.Event) []alert.Alert {
	if ev.Source != event.SourceWAL || ev.Operation != r.operation || ev.Rows < r.minRows {
		return nil
	}
	// An update counts when it changed sensitive columns, or when which columns it
	// changed cannot be known; deletes and truncates remove whole rows.
	if r.operation == "UPDATE" && len(ev.Changed) == 0 && ev.Complete {
		return nil
	}
	labels := map[string]string{alert.LabelSource: string(ev.Source)}
	for k, v := range map[string]string{alert.LabelTable: ev.Relation, alert.LabelDatabase: ev.Database,
		alert.LabelColumns: strings.Join(ev.Changed, ",")} {
		if v != "" {
			labels[k] = v
		}
	}
	fp := alert.Fingerprint(r.name, labels)
	if r.firing.refresh(fp, now, float64(ev.Rows)) {
		return nil
	}
	var summary, what string
	switch r.operation {
	case "UPDATE":
		what = "changed sensitive columns " + labels[alert.LabelColumns]
		if len(ev.Changed) == 0 {
			what = "changed possibly sensitive columns (the table lacks REPLICA IDENTITY FULL, so which ones is unknown)"
		}
		summary = fmt.Sprintf("Mass change of credentials in %s: %d rows in one transaction", ev.Relation, ev.Rows)
	case "DELETE":
		what = "deleted"
		summary = fmt.Sprintf("Mass delete from sensitive table %s: %d rows in one transaction", ev.Relation, ev.Rows)
	default:
		what = "truncated"
		summary = fmt.Sprintf("Sensitive table %s truncated", ev.Relation)
	}
	a := alert.Alert{
		Time: now, State: alert.StateFiring, Rule: r.name, Severity: alert.SeverityCritical,
		Fingerprint: fp, Value: float64(ev.Rows), Labels: labels,
		Annotations: map[string]string{
			alert.AnnotationSummary: summary,
			alert.AnnotationDescription: fmt.Sprintf(
				"One transaction committed at WAL position %X/%X %s %d rows of %s (threshold %d). "+
					"The WAL does not say who: look for the session in pg_stat_activity and the server log around %s. "+
					"If it is not an expected migration, lock the role that did it and restore from a backup; "+
					"for changed credentials, force re-authentication of the accounts.",
				ev.LSN>>32, uint32(ev.LSN), what, ev.Rows, ev.Relation, r.minRows, ev.Time.Format(time.RFC3339)),
			alert.AnnotationRunbookURL: "https://github.com/pgtripwire/pgtripwire/blob/main/docs/runbooks/" + r.name + ".md",
		},
	}
	return r.firing.fire(a, now)
}

// Tick resolves alerts quiet for ResolveAfter.
func (r *MassChange) Tick(now time.Time) []alert.Alert {
	return r.firing.resolveQuiet(now)
}
