package engine

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/model"
)

// Tick returns the transitions due at now without a new event: windows
// that slid, pending alerts whose `for` passed, alerts to resolve. It also
// samples baselines, forgets old first-seen keys and idle groups, updates
// the metrics, and saves the state when a transition happened since the
// last save or SaveInterval has passed.
func (e *Engine) Tick(now time.Time) []model.Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, a := range e.queued {
		a.Time = now
		e.out = append(e.out, a)
	}
	e.queued = nil
	e.resolveAdopted(now)
	for _, rs := range e.rules {
		if rs.startedAt.IsZero() {
			rs.startedAt = now
		}
		start := len(e.out)
		rs.kind.tick(e, rs, now)
		slices.SortFunc(e.out[start:], func(a, b model.Alert) int { return cmp.Compare(a.Fingerprint, b.Fingerprint) })
		e.flushCounters(rs)
		e.updateGauges(rs, now)
	}
	for _, rule := range slices.Sorted(maps.Keys(e.overflow)) {
		o := e.overflow[rule]
		if now.Sub(o.last) < e.opts.ResolveAfter {
			continue
		}
		if o.fired != nil {
			a := *o.fired
			a.Time, a.State = now, model.StateResolved
			e.out = append(e.out, a)
			e.dirty = true
		}
		delete(e.overflow, rule)
	}
	if e.opts.StatePath != "" && (e.dirty || now.Sub(e.lastSave) >= e.opts.SaveInterval) {
		if err := e.saveLocked(now); err != nil {
			e.log.Error("save rule state failed; retrying at the next tick", zap.Error(err))
		}
	}
	out := e.out
	e.out = nil
	return out
}

func (e *Engine) flushCounters(rs *ruleState) {
	name := rs.rule.Name
	add := func(v *prometheus.CounterVec, n *uint64) {
		if *n > 0 {
			v.WithLabelValues(name).Add(float64(*n))
			*n = 0
		}
	}
	add(e.m.evaluations, &rs.evals)
	add(e.m.matches, &rs.matches)
	add(e.m.excepted, &rs.excepted)
	add(e.m.evalErrors, &rs.errs)
	add(e.m.overflow, &rs.overflowed)
	add(e.m.shadowAlerts, &rs.shadow)
}

func (e *Engine) updateGauges(rs *ruleState, now time.Time) {
	var pending, firing int
	rs.eachGroup(func(g *group) {
		switch g.st.state {
		case model.StatePending:
			pending++
		case model.StateFiring:
			firing++
		}
	})
	name := rs.rule.Name
	if rs.gauges == nil {
		rs.gauges = &ruleGauges{pending: e.m.alerts.WithLabelValues(name, "pending"), firing: e.m.alerts.WithLabelValues(name, "firing"),
			groups: e.m.groups.WithLabelValues(name), expired: e.m.expired.WithLabelValues(name)}
	}
	rs.gauges.pending.Set(float64(pending))
	rs.gauges.firing.Set(float64(firing))
	n := rs.n + rs.seen.n + rs.scopes.n
	if rs.over != nil {
		n++
	}
	rs.gauges.groups.Set(float64(n))
	expired := 0
	for _, x := range rs.rule.Exceptions {
		if !x.Expires.IsZero() && !now.Before(x.Expires) {
			expired++
			if expired > rs.expiredSeen {
				e.log.Warn("rule exception expired and no longer applies",
					zap.String("rule", name), zap.String("position", x.Pos.String()), zap.Time("expires", x.Expires))
			}
		}
	}
	rs.expiredSeen = expired
	rs.gauges.expired.Set(float64(expired))
}
