package engine

import (
	"github.com/prometheus/client_golang/prometheus"
	"maps"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// ruleState is one rule and everything the engine learned for it.
type ruleState struct {
	rule *rulefmt.Rule
	def  string // hash of the parts of the definition the state depends on
	kind kind

	by    []model.EventField // the group key: aggregate.by, first_seen.key or the contract labels
	fixed map[string]string  // labels of every group (the source the match pins)
	// seenBy is the first_seen key, scopeBy its learn_per fields (nil
	// without): what seen and scopes are keyed by.
	seenBy, scopeBy []model.EventField

	startedAt time.Time // first evaluation: the learning period starts here
	groups    map[uint64]*group
	n         int
	over      *group // the overflow group, when the rule had too many
	seen      keySet // first_seen rules: the keys seen
	scopes    keySet // first_seen with learn_per: each value's first (learning start) and last event

	evals, matches, excepted, errs, overflowed, shadow uint64
	lastErrLog                                         time.Time
	expiredSeen                                        int
	// gauges are the rule's series, looked up once: Tick sets them every second.
	gauges *ruleGauges
}

type ruleGauges struct {
	pending, firing, groups, expired prometheus.Gauge
}

// adopt takes over what the rule o of the same definition learned: on
// Reload, a rule whose state depends on nothing that changed goes on.
func (rs *ruleState) adopt(o *ruleState) {
	rs.startedAt, rs.groups, rs.n, rs.over, rs.seen, rs.scopes = o.startedAt, o.groups, o.n, o.over, o.seen, o.scopes
	rs.lastErrLog = o.lastErrLog
}

// group is what a rule keeps per value of its group key: its labels, what
// its kind keeps (a window, a baseline) and its alert.
type group struct {
	key    []keyVal
	next   *group
	labels map[string]string // alert labels
	tmpl   map[string]string // template labels: alert labels and by-field names
	win    *window
	base   *baseline
	st     alertState
	// value of a rule without window: the largest since the condition
	// started holding; lastTrue: when it last held.
	value    float64
	lastTrue time.Time
}

// groupOf returns the group of ev if it has one (not the overflow group), without
// creating it.
func (e *Engine) groupOf(rs *ruleState, ev *model.Event) *group {
	for g := rs.groups[hashEvent(&e.h, rs.by, ev)]; g != nil; g = g.next {
		if keyEquals(rs.by, g.key, ev) {
			return g
		}
	}
	return nil
}

// groupFor returns the group of ev, creating it, or the overflow group when
// the rule already has MaxGroups.
func (e *Engine) groupFor(rs *ruleState, ev *model.Event, now time.Time) *group {
	if g := e.groupOf(rs, ev); g != nil {
		return g
	}
	if rs.n >= e.opts.MaxGroups {
		rs.overflowed++
		if rs.over == nil {
			rs.over = rs.newGroup(nil, now)
		}
		e.noteOverflow(rs, now)
		return rs.over
	}
	h := hashEvent(&e.h, rs.by, ev)
	g := rs.newGroup(keyOf(rs.by, ev), now)
	g.next = rs.groups[h]
	rs.groups[h] = g
	rs.n++
	return g
}

// newGroup makes a group for key; a nil key is the overflow group, whose
// labels are the fixed ones and overflow="true".
func (rs *ruleState) newGroup(key []keyVal, now time.Time) *group {
	g := &group{key: key, labels: maps.Clone(rs.fixed), tmpl: map[string]string{}}
	if key == nil {
		g.labels["overflow"] = "true"
	}
	for i, f := range rs.by {
		if key == nil {
			break
		}
		v := key[i].text(f.Type)
		if v == "" {
			continue
		}
		g.labels[f.Label] = v
		g.tmpl[f.Name] = v
	}
	maps.Copy(g.tmpl, g.labels)
	rs.kind.newGroup(g, now)
	return g
}

func (rs *ruleState) eachGroup(f func(*group)) {
	for _, head := range rs.groups {
		for g := head; g != nil; g = g.next {
			f(g)
		}
	}
	if rs.over != nil {
		f(rs.over)
	}
}

// sweep calls keep on every group, the overflow group last, and forgets
// those it returns false for.
func (rs *ruleState) sweep(keep func(*group) bool) {
	for h, head := range rs.groups {
		var kept *group
		for g := head; g != nil; {
			next := g.next
			if keep(g) {
				g.next, kept = kept, g
			} else {
				rs.n--
			}
			g = next
		}
		if kept == nil {
			delete(rs.groups, h)
		} else {
			rs.groups[h] = kept
		}
	}
	if rs.over != nil && !keep(rs.over) {
		rs.over = nil
	}
}

// keySet is the keys a first_seen rule has seen, with when it last saw
// each: a hash map of chains, like the groups, so that looking an event's
// key up does not allocate.
type keySet struct {
	m map[uint64]*seenKey
	n int
}

type seenKey struct {
	key []keyVal
	// firstSeen is kept for learn_per values (their learning start); keys
	// restored from a state file of an older version have none.
	firstSeen, lastSeen time.Time
	next                *seenKey
}

// find returns the key of ev, whose hash is h, or nil.
func (s *keySet) find(h uint64, by []model.EventField, ev *model.Event) *seenKey {
	for k := s.m[h]; k != nil; k = k.next {
		if keyEquals(by, k.key, ev) {
			return k
		}
	}
	return nil
}

func newKeySet() keySet { return keySet{m: map[uint64]*seenKey{}} }

func (s *keySet) add(h uint64, key []keyVal, firstSeen, lastSeen time.Time) {
	s.m[h] = &seenKey{key: key, firstSeen: firstSeen, lastSeen: lastSeen, next: s.m[h]}
	s.n++
}

func (s *keySet) each(f func(*seenKey)) {
	for _, head := range s.m {
		for k := head; k != nil; k = k.next {
			f(k)
		}
	}
}

// forgetOldest forgets the key seen longest ago.
func (s *keySet) forgetOldest() {
	var (
		oldH   uint64
		oldest *seenKey
	)
	for h, head := range s.m {
		for k := head; k != nil; k = k.next {
			if oldest == nil || k.lastSeen.Before(oldest.lastSeen) {
				oldH, oldest = h, k
			}
		}
	}
	if oldest != nil {
		s.remove(oldH, oldest)
	}
}

// forgetSeenBefore forgets the keys last seen before t.
func (s *keySet) forgetSeenBefore(t time.Time) {
	for h, head := range s.m {
		for k := head; k != nil; {
			next := k.next
			if k.lastSeen.Before(t) {
				s.remove(h, k)
			}
			k = next
		}
	}
}

func (s *keySet) remove(h uint64, k *seenKey) {
	var prev *seenKey
	for c := s.m[h]; c != nil; prev, c = c, c.next {
		if c != k {
			continue
		}
		switch {
		case prev != nil:
			prev.next = c.next
		case c.next != nil:
			s.m[h] = c.next
		default:
			delete(s.m, h)
		}
		s.n--
		return
	}
}
