package engine

import (
	"math"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// A kind is what one kind of rule does differently from the others, as
// Prometheus' alerting and recording rules are two types behind one
// interface. There are four: a threshold over a window (thresholdRule), a
// deviation from a learned baseline (baselineRule), a key not seen before
// (firstSeenRule), and a rule without aggregate that fires on each matching
// event (eventRule). What they share is the engine's, around them: match,
// exceptions, groups and their labels, the alert state machine (step),
// persistence and metrics.
type kind interface {
	// newGroup gives a new group of the rule what the kind keeps per group
	// (a window, a baseline).
	newGroup(g *group, now time.Time)
	// observe counts a matching event that no exception allows, at now, and
	// steps the alert of its group.
	observe(e *Engine, rs *ruleState, ev *model.Event, now time.Time)
	// tick steps the alerts of the rule's groups at now, without an event,
	// and forgets the groups (and keys) it no longer needs.
	tick(e *Engine, rs *ruleState, now time.Time)
}

// windowed is what threshold and baseline rules share: an aggregate of the
// group's matching events over a sliding window. The condition is evaluated
// at every matching event and at every Tick, so that a window sliding away
// resolves the alert.
type windowed struct {
	agg      aggFn
	val      *model.EventField // summed or maximised; nil: each event counts 1
	distinct *model.EventField // counted distinct
	width    time.Duration     // bucket width
}

func (w *windowed) newGroup(g *group, now time.Time) {
	g.win = newWindow(w.agg)
	g.win.head = bucketOf(now, w.width)
}

// add counts ev in g's window and returns the aggregate at now.
func (w *windowed) add(g *group, ev *model.Event, now time.Time) float64 {
	v, d := 1.0, ""
	if w.val != nil {
		v = float64(w.val.Int(ev))
	}
	if w.distinct != nil {
		d = distinctValue(w.distinct, ev)
	}
	b := bucketOf(now, w.width)
	g.win.add(b, w.agg, v, d)
	return g.win.value(b, w.agg)
}

func (w *windowed) value(g *group, now time.Time) float64 {
	return g.win.value(bucketOf(now, w.width), w.agg)
}

// idle reports whether g may be forgotten: no alert and an empty window.
func (w *windowed) idle(g *group, now time.Time) bool {
	return g.st.state == "" && g.win.empty(bucketOf(now, w.width), w.agg)
}

// step steps g's alert: a window's condition stops holding on its own, so a
// firing alert resolves keep_firing_for after it last held.
func (w *windowed) step(e *Engine, rs *ruleState, g *group, now time.Time, cond bool, value float64) {
	if cond {
		g.lastTrue = now
	}
	e.step(rs, g, now, cond, value, rs.rule.KeepFiringFor)
}

// thresholdRule fires when a group's aggregate crosses a threshold.
type thresholdRule struct {
	windowed
	cond rulefmt.Threshold
}

func (k *thresholdRule) observe(e *Engine, rs *ruleState, ev *model.Event, now time.Time) {
	g := e.groupFor(rs, ev, now)
	value := k.add(g, ev, now)
	k.step(e, rs, g, now, k.cond.Op.Compare(value, k.cond.Value), value)
}

func (k *thresholdRule) tick(e *Engine, rs *ruleState, now time.Time) {
	rs.sweep(func(g *group) bool {
		value := k.value(g, now)
		k.step(e, rs, g, now, k.cond.Op.Compare(value, k.cond.Value), value)
		return !k.idle(g, now)
	})
}

// baselineRule fires when a group's aggregate is well above what it usually
// is: each group's aggregate is sampled once per window period into an EWMA
// mean and variance.
type baselineRule struct {
	windowed
	cond   rulefmt.Baseline
	period time.Duration // the window: one sample per period, aligned on the Unix epoch
	alpha  float64       // EWMA weight
}

// baseline is what a group of a baseline rule learned.
type baseline struct {
	mean, variance float64
	samples        int64
	last           int64 // number of the last sample period (window-aligned since the epoch)
}

func (k *baselineRule) newGroup(g *group, now time.Time) {
	k.windowed.newGroup(g, now)
	g.base = &baseline{last: now.UnixNano() / int64(k.period)}
}

func (k *baselineRule) observe(e *Engine, rs *ruleState, ev *model.Event, now time.Time) {
	g := e.groupFor(rs, ev, now)
	value := k.add(g, ev, now)
	k.step(e, rs, g, now, k.holds(rs, g, now, value), value)
}

func (k *baselineRule) tick(e *Engine, rs *ruleState, now time.Time) {
	rs.sweep(func(g *group) bool {
		value := k.value(g, now)
		k.sample(g, now, value)
		k.step(e, rs, g, now, k.holds(rs, g, now, value), value)
		if !k.idle(g, now) {
			return true
		}
		// A learned baseline is kept while it is stricter than what a new
		// group would be held to (the floor).
		return g.base.samples > 0 && g.base.mean+k.cond.ZScore*math.Sqrt(g.base.variance) >= k.cond.Floor
	})
}

// holds reports whether value deviates from g's baseline: once the rule has
// learned for learn_for, at least floor and above mean + z_score × stddev.
func (k *baselineRule) holds(rs *ruleState, g *group, now time.Time, value float64) bool {
	if now.Sub(rs.startedAt) < k.cond.LearnFor || value < k.cond.Floor {
		return false
	}
	return value > g.base.mean+k.cond.ZScore*math.Sqrt(g.base.variance)
}

// sample folds the aggregate into the group's baseline once per window
// period (periods are window-aligned since the Unix epoch). A group whose
// alert is pending or firing does not learn: an attack must not become the
// norm while it goes on. Periods missed while the detector was down are not
// filled in.
func (k *baselineRule) sample(g *group, now time.Time, value float64) {
	p := now.UnixNano() / int64(k.period)
	if p <= g.base.last {
		return
	}
	g.base.last = p
	if g.st.state != "" {
		return
	}
	b := g.base
	if b.samples == 0 {
		b.mean, b.variance = value, 0
	} else {
		diff := value - b.mean
		incr := k.alpha * diff
		b.mean += incr
		b.variance = (1 - k.alpha) * (b.variance + diff*incr)
	}
	b.samples++
}

// held is what first_seen rules and rules without aggregate share: they
// have no window, so a passing event makes the condition hold for hold
// (keep_firing_for, or Options.ResolveAfter), and the alert's value is the
// largest since it became active.
type held struct {
	hold time.Duration
}

func (held) newGroup(*group, time.Time) {}

// hit makes g's condition hold from now, with value v.
func (h *held) hit(e *Engine, rs *ruleState, g *group, now time.Time, v float64) {
	if g.st.state == "" {
		g.value = v
	} else {
		g.value = max(g.value, v)
	}
	g.lastTrue = now
	e.step(rs, g, now, true, g.value, 0)
}

func (h *held) tick(e *Engine, rs *ruleState, now time.Time) {
	rs.sweep(func(g *group) bool {
		cond := !g.lastTrue.IsZero() && now.Sub(g.lastTrue) < h.hold
		// The hold is keep_firing_for already: resolve as soon as it ends.
		e.step(rs, g, now, cond, g.value, 0)
		return g.st.state != ""
	})
}

// eventRule fires on every matching event, or on those whose field passes
// the threshold; its groups are the alert contract's labels.
type eventRule struct {
	held
	threshold *rulefmt.Threshold // nil: every matching event
	val       *model.EventField  // the value: the threshold's field, or rows
}

func (k *eventRule) observe(e *Engine, rs *ruleState, ev *model.Event, now time.Time) {
	v := float64(k.val.Int(ev))
	if k.threshold != nil && !k.threshold.Op.Compare(v, k.threshold.Value) {
		return
	}
	k.hit(e, rs, e.groupFor(rs, ev, now), now, v)
}

// firstSeenRule fires on an event whose key was not seen during learn_for,
// nor within forget_after since.
type firstSeenRule struct {
	held
	newKeys
}

func (k *firstSeenRule) observe(e *Engine, rs *ruleState, ev *model.Event, now time.Time) {
	if !k.isNew(e, rs, ev, now) {
		return
	}
	k.hit(e, rs, e.groupFor(rs, ev, now), now, float64(ev.Rows))
}

func (k *firstSeenRule) tick(e *Engine, rs *ruleState, now time.Time) {
	k.held.tick(e, rs, now)
	k.forget(rs, now)
}

// newKeysRule is a first_seen condition beside an aggregate and a
// threshold: the events whose key is new are counted in the windows of
// aggregate.by, and the threshold fires. Its alerts are per group, not per
// key: one alert for the new statements of a role, however many there are.
type newKeysRule struct {
	thresholdRule
	newKeys
}

func (k *newKeysRule) observe(e *Engine, rs *ruleState, ev *model.Event, now time.Time) {
	if !k.isNew(e, rs, ev, now) {
		return
	}
	k.thresholdRule.observe(e, rs, ev, now)
}

func (k *newKeysRule) tick(e *Engine, rs *ruleState, now time.Time) {
	k.thresholdRule.tick(e, rs, now)
	k.forget(rs, now)
}

// newKeys is what a first_seen condition keeps and decides: the keys seen
// (rs.seen, by rs.seenBy) and, with learn_per, when each value of those
// fields started learning (rs.scopes, by rs.scopeBy).
type newKeys struct {
	cond rulefmt.FirstSeen
}

// isNew records the event's key and reports whether it is new: past the
// learning period of the rule (or of the event's learn_per value) and not
// seen before, or not within forget_after. With remember: learning, a key
// first seen after learning is not recorded, so it stays new.
func (k *newKeys) isNew(e *Engine, rs *ruleState, ev *model.Event, now time.Time) bool {
	learning := now.Sub(k.learningStart(e, rs, ev, now)) < k.cond.LearnFor
	keepAll := k.cond.Remember != rulefmt.RememberLearning
	h := hashEvent(&e.h, rs.seenBy, ev)
	if s := rs.seen.find(h, rs.seenBy, ev); s != nil {
		forgotten := k.cond.ForgetAfter > 0 && now.Sub(s.lastSeen) > k.cond.ForgetAfter
		if forgotten && !learning && !keepAll {
			// No longer learned, and nothing is learned after learning.
			rs.seen.remove(h, s)
			return true
		}
		if now.After(s.lastSeen) {
			s.lastSeen = now
		}
		return forgotten && !learning
	}
	if learning || keepAll {
		k.remember(e, rs, &rs.seen, h, rs.seenBy, ev, now)
	}
	return !learning
}

// learningStart returns when the event's learning period started: the
// rule's first evaluation, or with learn_per the first matching event of its
// learn_per value, which it records.
func (k *newKeys) learningStart(e *Engine, rs *ruleState, ev *model.Event, now time.Time) time.Time {
	if len(rs.scopeBy) == 0 {
		return rs.startedAt
	}
	h := hashEvent(&e.h, rs.scopeBy, ev)
	if s := rs.scopes.find(h, rs.scopeBy, ev); s != nil {
		// Seen now, so that forget_after counts from its last event, as its
		// keys' does: a value whose keys are still known keeps its start.
		if now.After(s.lastSeen) {
			s.lastSeen = now
		}
		return s.firstSeen
	}
	k.remember(e, rs, &rs.scopes, h, rs.scopeBy, ev, now)
	return now
}

// remember adds the event's key (of fields fs, hash h) to set, forgetting the
// one seen longest ago when the rule already holds MaxGroups. For keys that
// is the failure that pages (the key is new again when it comes back) rather
// than the one that hides (not learning new keys); a learn_per value
// forgotten learns again if it comes back, which the overflow alert reports.
func (k *newKeys) remember(e *Engine, rs *ruleState, set *keySet, h uint64, fs []model.EventField, ev *model.Event, now time.Time) {
	if set.n >= e.opts.MaxGroups {
		set.forgetOldest()
		rs.overflowed++
		e.noteOverflow(rs, now)
	}
	set.add(h, keyOf(fs, ev), now, now)
}

// forget forgets the keys, and the learn_per values, not seen within
// forget_after.
func (k *newKeys) forget(rs *ruleState, now time.Time) {
	if k.cond.ForgetAfter > 0 {
		rs.seen.forgetSeenBefore(now.Add(-k.cond.ForgetAfter))
		rs.scopes.forgetSeenBefore(now.Add(-k.cond.ForgetAfter))
	}
}
