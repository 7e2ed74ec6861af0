package builtin

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgtripwire/pgtripwire/detector/alert"
	"github.com/pgtripwire/pgtripwire/detector/event"
)

// SweepRuleName is the rule (and alertname) of the paginated-sweep detection.
const SweepRuleName = "SensitiveSweep"

// SweepRunbookURL documents what the on-call engineer should do.
const SweepRunbookURL = "https://github.com/pgtripwire/pgtripwire/blob/main/docs/runbooks/SensitiveSweep.md"

// maxSweepGroups bounds the groups the rule tracks: past it the group updated longest
// ago is forgotten (and counted), so that memory stays bounded whatever the traffic.
const maxSweepGroups = 10_000

// Sweep fires when one group (database, table, role, client, application) reads
// sensitive columns in pages - statements returning at least MinRowsPerCall but fewer
// than the bulk-read threshold rows per call - that add up to MinRows within Window:
// the intruder who pages through the table 500 rows at a time to stay under a
// per-statement threshold. Login lookups (one row) and short listings (below
// MinRowsPerCall) never count; single statements at or above the bulk-read threshold
// are SensitiveBulkRead's. It resolves after ResolveAfter without a counted page, and
// then starts counting afresh.
//
// An application that legitimately reads pages of sensitive rows all day under one
// role keeps this rule firing for that role, and while it fires a sweep by the same
// role does not page again: such an application needs its own role, or thresholds
// above its traffic.
//
// Sweep is not safe for concurrent use; the detector serialises evaluation.
type Sweep struct {
	minRowsPerCall  int64
	bulkRowsPerCall int64 // pages at or above this are bulk reads, not sweep pages
	minRows         int64
	window          time.Duration
	resolveAfter    time.Duration

	groups  map[string]*sweepGroup // by fingerprint
	evicted prometheus.Counter     // groups forgotten at the bound
}

type sweepGroup struct {
	labels  map[string]string
	columns map[string]bool
	pages   []sweepPage // oldest first, within window
	sum     int64
	firing  *alert.Alert
	last    time.Time
}

type sweepPage struct {
	at   time.Time
	rows int64
}

// NewSweep returns the rule. bulkRowsPerCall is SensitiveBulkRead's threshold, or 0
// when that rule is off (then every page of MinRowsPerCall rows or more counts).
// evicted counts groups forgotten at the bound; nil counts nowhere.
func NewSweep(minRowsPerCall, bulkRowsPerCall, minRows int64, window, resolveAfter time.Duration,
	evicted prometheus.Counter) *Sweep {
	if evicted == nil {
		evicted = prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"})
	}
	return &Sweep{
		evicted:         evicted,
		minRowsPerCall:  minRowsPerCall,
		bulkRowsPerCall: bulkRowsPerCall,
		minRows:         minRows,
		window:          window,
		resolveAfter:    resolveAfter,
		groups:          make(map[string]*sweepGroup),
	}
}

// Rules lists the rule and its severity.
func (r *Sweep) Rules() map[string]alert.Severity {
	return map[string]alert.Severity{SweepRuleName: alert.SeverityCritical}
}

// Eval counts a page and returns a firing transition when its group's rows within the
// window reach MinRows for the first time.
func (r *Sweep) Eval(now time.Time, ev event.Event) []alert.Alert {
	if !r.matches(ev) {
		return nil
	}
	labels := sweepLabels(ev)
	fp := alert.Fingerprint(SweepRuleName, labels)
	g, ok := r.groups[fp]
	if !ok {
		r.evictIfFull()
		g = &sweepGroup{labels: labels, columns: make(map[string]bool)}
		r.groups[fp] = g
	}
	for _, c := range ev.SensitiveRead {
		g.columns[c] = true
	}
	g.pages = append(g.pages, sweepPage{at: now, rows: ev.Rows})
	g.sum += ev.Rows
	g.last = now
	r.trim(g, now)
	if g.firing != nil {
		g.firing.Value = max(g.firing.Value, float64(g.sum))
		return nil
	}
	if g.sum < r.minRows {
		return nil
	}
	g.labels[alert.LabelColumns] = strings.Join(slices.Sorted(maps.Keys(g.columns)), ",")
	if g.labels[alert.LabelColumns] == "" {
		delete(g.labels, alert.LabelColumns)
	}
	a := alert.Alert{
		Time:        now,
		State:       alert.StateFiring,
		Rule:        SweepRuleName,
		Severity:    alert.SeverityCritical,
		Fingerprint: fp,
		Value:       float64(g.sum),
		Labels:      maps.Clone(g.labels),
		Annotations: r.annotations(ev, g),
	}
	g.firing = &a
	return []alert.Alert{a}
}

// Tick resolves groups quiet for ResolveAfter and forgets groups with nothing left in
// their window.
func (r *Sweep) Tick(now time.Time) []alert.Alert {
	var resolved []alert.Alert
	for _, fp := range slices.Sorted(maps.Keys(r.groups)) {
		g := r.groups[fp]
		r.trim(g, now)
		if g.firing != nil && now.Sub(g.last) >= r.resolveAfter {
			a := *g.firing
			a.Time, a.State = now, alert.StateResolved
			resolved = append(resolved, a)
			// The sweep that fired is over: its pages must not make the next
			// hundred rows fire it again.
			delete(r.groups, fp)
			continue
		}
		if g.firing == nil && len(g.pages) == 0 {
			delete(r.groups, fp)
		}
	}
	return resolved
}

func (r *Sweep) matches(ev event.Event) bool {
	if ev.Source == event.SourceWAL || ev.Calls <= 0 || ev.Rows <= 0 || (len(ev.SensitiveRead) == 0 && ev.Complete) {
		return false
	}
	perCall := ev.RowsPerCall()
	return perCall >= r.minRowsPerCall && (r.bulkRowsPerCall <= 0 || perCall < r.bulkRowsPerCall)
}

// trim drops the pages that left the window.
func (r *Sweep) trim(g *sweepGroup, now time.Time) {
	i := 0
	for i < len(g.pages) && now.Sub(g.pages[i].at) > r.window {
		g.sum -= g.pages[i].rows
		i++
	}
	g.pages = g.pages[i:]
}

// evictIfFull forgets the group updated longest ago that is not firing. Firing groups
// are never forgotten (their resolution would be lost), so the bound holds as long as
// fewer than maxSweepGroups groups fire at once.
func (r *Sweep) evictIfFull() {
	if len(r.groups) < maxSweepGroups {
		return
	}
	var oldest string
	for fp, g := range r.groups {
		if g.firing == nil && (oldest == "" || g.last.Before(r.groups[oldest].last)) {
			oldest = fp
		}
	}
	if oldest != "" {
		delete(r.groups, oldest)
		r.evicted.Inc()
	}
}

func sweepLabels(ev event.Event) map[string]string {
	labels := map[string]string{alert.LabelSource: string(ev.Source)}
	for k, v := range map[string]string{
		alert.LabelTable: ev.Relation, alert.LabelDatabase: ev.Database, alert.LabelRole: ev.Role,
		alert.LabelClientAddr: ev.ClientAddr, alert.LabelApplication: ev.Application,
	} {
		if v != "" {
			labels[k] = v
		}
	}
	return labels
}

func (r *Sweep) annotations(ev event.Event, g *sweepGroup) map[string]string {
	who := g.labels[alert.LabelRole]
	if who == "" {
		who = "an unknown role"
	}
	table := g.labels[alert.LabelTable]
	if table == "" {
		table = "a table the detector could not identify"
	}
	return map[string]string{
		alert.AnnotationSummary: fmt.Sprintf("Paginated sweep of sensitive columns %s of %s by %s",
			g.labels[alert.LabelColumns], table, who),
		alert.AnnotationDescription: fmt.Sprintf(
			"%d rows in %d pages of %d to %d rows each within %s (threshold %d rows), in database %s; "+
				"the last page was query %d. Each page stays below the bulk-read threshold; together "+
				"they read the table. Find the statement with `SELECT query FROM pg_stat_statements "+
				"WHERE queryid = %d`; if it is not expected, stop the role's sessions and revoke its access.",
			g.sum, len(g.pages), r.minRowsPerCall, max(r.bulkRowsPerCall-1, r.minRowsPerCall), r.window,
			r.minRows, ev.Database, ev.QueryID, ev.QueryID),
		alert.AnnotationRunbookURL: SweepRunbookURL,
	}
}
