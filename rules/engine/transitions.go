package engine

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// The alert state machine and the transitions it returns, shared by every
// kind of rule, and the engine's own RuleGroupOverflow alert.

type alertState struct {
	state     model.State // "" when inactive
	activeAt  time.Time
	firedAt   time.Time
	fired     *model.Alert // the firing transition, reused for the resolved one
	delivered bool         // fired in page mode: its resolution is delivered too
}

type overflowAlert struct {
	last  time.Time
	fired *model.Alert
}

// adoptedAlert is a firing alert the engine took over from the alert log: until a rule
// fires it again it is resolved at until.
type adoptedAlert struct {
	alert model.Alert
	until time.Time
}

// Adopt takes over alerts the alert log says are firing and the restored state does
// not hold (it was lost, or its save failed before a restart): when a rule fires one of
// them again, it continues, with no second firing line; when none does within
// ResolveAfter, it is resolved, with one resolved line. So every episode has one firing
// and one resolved line across such a restart.
func (e *Engine) Adopt(alerts []model.Alert, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, a := range alerts {
		if a.State != model.StateFiring {
			continue
		}
		a.Labels, a.Annotations = maps.Clone(a.Labels), maps.Clone(a.Annotations)
		e.adopted[a.Fingerprint] = &adoptedAlert{alert: a, until: now.Add(e.opts.ResolveAfter)}
		e.dirty = true
	}
}

// resolveAdopted resolves the adopted alerts no rule fired again in time.
func (e *Engine) resolveAdopted(now time.Time) {
	for _, fp := range slices.Sorted(maps.Keys(e.adopted)) {
		ad := e.adopted[fp]
		if now.Before(ad.until) {
			continue
		}
		a := ad.alert
		a.Time, a.State = now, model.StateResolved
		e.out = append(e.out, a)
		e.dirty = true
		delete(e.adopted, fp)
	}
}

// step runs the alert state machine of a group whose condition is cond at
// now: inactive → pending → firing after `for` → resolved once the
// condition has not held for keepFiringFor since g.lastTrue. The kinds of
// rule differ only in what cond, value and keepFiringFor are.
func (e *Engine) step(rs *ruleState, g *group, now time.Time, cond bool, value float64, keepFiringFor time.Duration) {
	st := &g.st
	if cond {
		if st.state == "" {
			st.state, st.activeAt = model.StatePending, now
		}
		if st.state == model.StatePending && now.Sub(st.activeAt) >= rs.rule.For {
			e.fire(rs, g, now, value)
		}
		if st.state == model.StateFiring && value > st.fired.Value {
			// The resolved line reports the peak: how much was read while it fired.
			st.fired.Value = value
		}
		return
	}
	switch st.state {
	case model.StatePending:
		g.st = alertState{}
	case model.StateFiring:
		if now.Sub(g.lastTrue) >= keepFiringFor {
			e.resolve(rs, g, now, value)
		}
	}
}

func (e *Engine) fire(rs *ruleState, g *group, now time.Time, value float64) {
	labels, annotations := e.render(rs, g, value)
	a := model.Alert{
		Time:        now,
		State:       model.StateFiring,
		Rule:        rs.rule.Name,
		Severity:    model.Severity(rs.rule.Severity),
		Fingerprint: model.Fingerprint(rs.rule.Name, labels),
		Value:       value,
		Labels:      labels,
		Annotations: annotations,
	}
	if ad := e.adopted[a.Fingerprint]; ad != nil {
		// Firing before the restart, in the alert log: the same episode goes on.
		delete(e.adopted, a.Fingerprint)
		fired := ad.alert
		fired.Value = max(fired.Value, value)
		g.st.state, g.st.firedAt, g.st.fired, g.st.delivered = model.StateFiring, fired.Time, &fired, true
		e.dirty = true
		return
	}
	fired := a
	fired.Labels, fired.Annotations = maps.Clone(labels), maps.Clone(annotations)
	g.st.state, g.st.firedAt, g.st.fired = model.StateFiring, now, &fired
	g.st.delivered = rs.rule.Mode != rulefmt.ModeShadow
	e.emit(rs, a, g.st.delivered)
}

func (e *Engine) resolve(rs *ruleState, g *group, now time.Time, value float64) {
	a := *g.st.fired // its Value is the peak while firing
	a.Time, a.State = now, model.StateResolved
	a.Labels, a.Annotations = maps.Clone(a.Labels), maps.Clone(a.Annotations)
	delivered := g.st.delivered
	g.st, g.value, g.lastTrue = alertState{}, 0, time.Time{}
	e.emit(rs, a, delivered)
}

// emit returns a transition to the pipeline, or for a rule in shadow mode
// logs and counts it.
func (e *Engine) emit(rs *ruleState, a model.Alert, delivered bool) {
	e.dirty = true
	if delivered {
		e.out = append(e.out, a)
		return
	}
	if a.State == model.StateFiring {
		rs.shadow++
	}
	e.log.Info("shadow rule alert (not delivered)",
		zap.String("rule", a.Rule), zap.String("state", string(a.State)),
		zap.String("fingerprint", a.Fingerprint), zap.Float64("value", a.Value),
		zap.Any("labels", a.Labels))
}

// render expands the rule's labels and annotations for a group. A template
// that fails to execute is logged and left out: the alert still fires.
func (e *Engine) render(rs *ruleState, g *group, value float64) (labels, annotations map[string]string) {
	labels = maps.Clone(g.labels)
	expanded, annotations, err := rs.rule.Expand(rulefmt.TemplateData{Labels: g.tmpl, Value: value})
	if err != nil {
		e.log.Error("alert templates failed; the alert fires without the rule's labels and annotations",
			zap.String("rule", rs.rule.Name), zap.Error(err))
		return labels, map[string]string{}
	}
	for k := range rs.rule.Labels {
		if v := expanded[k]; v != "" {
			labels[k] = v
		} else {
			delete(labels, k)
		}
	}
	return labels, annotations
}

// noteOverflow counts an overflow of the rule and fires RuleGroupOverflow
// for it if it is not firing.
func (e *Engine) noteOverflow(rs *ruleState, now time.Time) {
	o := e.overflow[rs.rule.Name]
	if o == nil {
		o = &overflowAlert{}
		e.overflow[rs.rule.Name] = o
	}
	o.last = now
	if o.fired != nil {
		return
	}
	labels := map[string]string{"rule": rs.rule.Name}
	a := model.Alert{
		Time: now, State: model.StateFiring, Rule: OverflowRuleName, Severity: model.SeverityWarning,
		Fingerprint: model.Fingerprint(OverflowRuleName, labels), Value: float64(e.opts.MaxGroups),
		Labels: labels,
		Annotations: map[string]string{
			model.AnnotationSummary: fmt.Sprintf("Rule %s tracks its maximum of %d groups", rs.rule.Name, e.opts.MaxGroups),
			model.AnnotationDescription: fmt.Sprintf("Events of new groups of rule %s are counted together in one overflow group "+
				"(label overflow=\"true\"), and first-seen rules forget the keys seen longest ago. Either the traffic has "+
				"far more distinct %v than expected (an intruder spraying roles or clients can cause this), or the rule "+
				"groups by too many fields.", rs.rule.Name, fieldNames(rs.by)),
		},
	}
	e.log.Warn("rule has too many groups; new groups are counted in its overflow group",
		zap.String("rule", rs.rule.Name), zap.Int("max_groups", e.opts.MaxGroups))
	fired := a
	o.fired = &fired
	e.dirty = true
	e.out = append(e.out, a)
}

func fieldNames(fs []model.EventField) []string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.Name
	}
	return names
}

// dropRule queues the resolution of the rule's delivered firing alerts.
func (e *Engine) dropRule(rs *ruleState) {
	rs.eachGroup(func(g *group) {
		if g.st.state == model.StateFiring && g.st.delivered {
			a := *g.st.fired
			a.State = model.StateResolved
			a.Labels, a.Annotations = maps.Clone(a.Labels), maps.Clone(a.Annotations)
			e.queued = append(e.queued, a)
		}
	})
}
