package engine

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// OverflowRuleName is the rule of the warning alert raised when a rule
// tracks its maximum number of groups; its one label is "rule".
const OverflowRuleName = "RuleGroupOverflow"

// Defaults of Options.
const (
	DefaultMaxGroups    = 10_000
	DefaultResolveAfter = 5 * time.Minute
	DefaultSaveInterval = 30 * time.Second
)

// Options configure an Engine. The zero value works: no persistence, the
// defaults above, a no-op logger and an unregistered set of metrics.
type Options struct {
	// StatePath is the file the state is saved to and loaded from, in the
	// state directory; "" keeps the state in memory only.
	StatePath string
	// SaveInterval is how often Tick saves the state when nothing fired or
	// resolved (a transition makes the next Tick save); default 30s.
	SaveInterval time.Duration
	// MaxGroups bounds the groups of each rule, and the keys of each
	// first_seen rule; default 10,000.
	MaxGroups int
	// ResolveAfter is how long an alert of a rule without aggregate keeps
	// firing after its last matching event when the rule has no
	// keep_firing_for; also how long RuleGroupOverflow stays firing after the
	// last overflow. Default 5m (the configuration's alerts.resolve_after).
	ResolveAfter time.Duration
	Logger       *zap.Logger
	Registerer   prometheus.Registerer
}

// Engine evaluates rules on events: it implements the detector's Evaluator.
// All methods are safe for concurrent use (one mutex: the pipeline
// serialises Eval and Tick anyway, Reload may come from a signal handler).
type Engine struct {
	mu   sync.Mutex
	opts Options
	log  *zap.Logger
	m    *metrics

	rules    []*ruleState
	dispatch map[model.Source][]*ruleState // rules that may match events of a source
	anySrc   []*ruleState                  // rules for sources no rule pins

	overflow map[string]*overflowAlert // by rule
	queued   []model.Alert             // resolutions of dropped rules, due at the next Tick

	lastSave time.Time
	dirty    bool // a transition since the last save

	h    maphash.Hash
	cur  model.Event // the event being evaluated: its address does not escape per call
	addr struct {
		parsed, ok bool
		a          netip.Addr
	}
}

type ruleKind int

const (
	kindThreshold ruleKind = iota // aggregate and threshold
	kindBaseline                  // aggregate and baseline
	kindFirstSeen                 // first_seen key
	kindEvent                     // no aggregate: each matching event is its own value
)

// ruleState is one rule and everything the engine learned for it.
type ruleState struct {
	rule  *rulefmt.Rule
	index int
	def   string // hash of the parts of the definition the state depends on
	kind  ruleKind

	by       []field           // the group key: aggregate.by, first_seen.key or the contract labels
	fixed    map[string]string // labels of every group (the source the match pins)
	agg      aggFn
	val      *field // summed / maximised / threshold field; nil: count (1 per event) or rows
	distinct *field
	width    time.Duration // bucket width
	hold     time.Duration // rules without aggregate: how long a match keeps the condition true
	alpha    float64       // baseline EWMA weight

	startedAt time.Time // first evaluation: the learning period starts here
	groups    map[uint64]*group
	n         int
	over      *group // the overflow group, when the rule had too many
	seen      map[uint64]*seenKey
	nSeen     int

	evals, matches, excepted, errs, overflowed, shadow uint64
	lastErrLog                                         time.Time
	expiredSeen                                        int
}

type group struct {
	key    []keyVal
	next   *group
	labels map[string]string // alert labels
	tmpl   map[string]string // template labels: alert labels and by-field names
	win    *window
	base   *baseline
	st     alertState
	// value of a rule without aggregate: the largest since the condition
	// started holding; lastTrue: when it last held.
	value    float64
	lastTrue time.Time
}

type alertState struct {
	state     model.State // "" when inactive
	activeAt  time.Time
	firedAt   time.Time
	fired     *model.Alert // the firing transition, reused for the resolved one
	delivered bool         // fired in page mode: its resolution is delivered too
}

type baseline struct {
	mean, variance float64
	samples        int64
	last           int64 // number of the last sample period (window-aligned since the epoch)
}

type seenKey struct {
	key      []keyVal
	lastSeen time.Time
	next     *seenKey
}

type overflowAlert struct {
	last  time.Time
	fired *model.Alert
}

// New returns an engine for the rules of groups, with the state saved at
// opts.StatePath when there is one. A state file that cannot be parsed (or
// is of an unknown version) is logged as a warning, moved aside to
// StatePath+".corrupt" and the engine starts fresh; one that cannot be read
// (permissions, I/O) is an error, since starting fresh would forget every
// baseline and re-fire every firing alert.
func New(groups []rulefmt.Group, opts Options) (*Engine, error) {
	if opts.MaxGroups <= 0 {
		opts.MaxGroups = DefaultMaxGroups
	}
	if opts.ResolveAfter <= 0 {
		opts.ResolveAfter = DefaultResolveAfter
	}
	if opts.SaveInterval <= 0 {
		opts.SaveInterval = DefaultSaveInterval
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	e := &Engine{
		opts:     opts,
		log:      opts.Logger.Named("rules"),
		m:        newMetrics(opts.Registerer),
		overflow: map[string]*overflowAlert{},
	}
	rules, err := e.build(groups)
	if err != nil {
		return nil, err
	}
	e.install(rules)
	if opts.StatePath != "" {
		if err := e.load(); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Reload replaces the rules. A rule keeps its state (windows, baselines,
// first-seen keys, learning start, pending and firing alerts) when a rule of
// the same name was loaded with the same match, aggregate and condition;
// its description, severity, mode, for, keep_firing_for, exceptions, labels
// and annotations may change (an alert already firing keeps the labels it
// fired with until it resolves). The firing alerts of rules removed or
// redefined are resolved at the next Tick. On error nothing changes.
func (e *Engine) Reload(groups []rulefmt.Group) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	rules, err := e.build(groups)
	if err != nil {
		return err
	}
	old := map[string]*ruleState{}
	for _, rs := range e.rules {
		old[rs.rule.Name] = rs
	}
	for _, rs := range rules {
		o, ok := old[rs.rule.Name]
		if !ok {
			continue
		}
		delete(old, rs.rule.Name)
		if o.def != rs.def {
			e.dropRule(o)
			continue
		}
		rs.startedAt, rs.groups, rs.n, rs.over, rs.seen, rs.nSeen = o.startedAt, o.groups, o.n, o.over, o.seen, o.nSeen
		rs.lastErrLog = o.lastErrLog
		e.flushCounters(o)
	}
	for _, o := range old {
		e.flushCounters(o)
		e.dropRule(o)
		e.m.forget(o.rule.Name)
	}
	e.install(rules)
	e.dirty = true
	e.log.Info("rules reloaded", zap.Int("rules", len(rules)))
	return nil
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

func (e *Engine) build(groups []rulefmt.Group) ([]*ruleState, error) {
	var (
		rules []*ruleState
		seen  = map[string]bool{}
		errs  []error
	)
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Name == OverflowRuleName {
				errs = append(errs, fmt.Errorf("rule %s: the name is reserved for the engine's own warning", r.Name))
				continue
			}
			if seen[r.Name] {
				errs = append(errs, fmt.Errorf("rule %s: duplicate rule name", r.Name))
				continue
			}
			seen[r.Name] = true
			rs, err := newRuleState(r, len(rules), e.opts)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			rules = append(rules, rs)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	return rules, nil
}

func newRuleState(r *rulefmt.Rule, index int, opts Options) (*ruleState, error) {
	rs := &ruleState{rule: r, index: index, groups: map[uint64]*group{}, seen: map[uint64]*seenKey{}}
	var by []string
	switch {
	case r.Aggregate != nil && r.Condition.Baseline != nil:
		rs.kind = kindBaseline
	case r.Aggregate != nil:
		rs.kind = kindThreshold
	case r.Condition.FirstSeen != nil:
		rs.kind = kindFirstSeen
		by = r.Condition.FirstSeen.Key
	default:
		rs.kind = kindEvent
		by = []string{"source", "database", "relation", columnsField, "role", "client_addr", "application"}
	}
	if a := r.Aggregate; a != nil {
		if a.Window <= 0 {
			return nil, fmt.Errorf("rule %s: aggregate window must be positive", r.Name)
		}
		if r.Condition.Threshold == nil && r.Condition.Baseline == nil {
			return nil, fmt.Errorf("rule %s: an aggregate needs a threshold or baseline condition", r.Name)
		}
		by = a.By
		rs.width = max(a.Window/buckets, time.Nanosecond)
		switch a.Function {
		case rulefmt.AggCount:
			rs.agg = aggCount
		case rulefmt.AggSum:
			rs.agg = aggSum
		case rulefmt.AggMax:
			rs.agg = aggMax
		case rulefmt.AggCountDistinct:
			rs.agg = aggDistinct
		default:
			return nil, fmt.Errorf("rule %s: unknown aggregate function %q", r.Name, a.Function)
		}
		if a.Field != "" {
			f, err := lookupField(a.Field)
			if err != nil {
				return nil, fmt.Errorf("rule %s: aggregate field: %w", r.Name, err)
			}
			if rs.agg == aggDistinct {
				rs.distinct = &f
			} else {
				rs.val = &f
			}
		}
		if (rs.agg == aggSum || rs.agg == aggMax) && (rs.val == nil || rs.val.kind != kindInt) {
			return nil, fmt.Errorf("rule %s: %s needs a numeric field", r.Name, a.Function)
		}
		if rs.agg == aggDistinct && rs.distinct == nil {
			return nil, fmt.Errorf("rule %s: count_distinct needs a field", r.Name)
		}
	} else if t := r.Condition.Threshold; t != nil {
		f, err := lookupField(cmp.Or(t.Field, "rows"))
		if err != nil || f.kind != kindInt {
			return nil, fmt.Errorf("rule %s: threshold field %q is not numeric", r.Name, t.Field)
		}
		rs.val = &f
	}
	if b := r.Condition.Baseline; b != nil {
		n := float64(b.LearnFor) / float64(r.Aggregate.Window)
		rs.alpha = 2 / (max(n, 2) + 1)
	}
	var err error
	if rs.by, err = groupFields(by); err != nil {
		return nil, fmt.Errorf("rule %s: group: %w", r.Name, err)
	}
	rs.fixed = map[string]string{}
	if src := r.Sources(); len(src) == 1 && !slices.Contains(by, "source") {
		rs.fixed[model.LabelSource] = string(src[0])
	}
	rs.hold = r.KeepFiringFor
	if rs.hold <= 0 {
		rs.hold = opts.ResolveAfter
	}
	rs.def = definition(r)
	return rs, nil
}

// definition hashes what a rule's state depends on: its match, aggregate
// and condition.
func definition(r *rulefmt.Rule) string {
	b, _ := json.Marshal(struct {
		Match     string
		Aggregate *rulefmt.Aggregate
		Condition rulefmt.Condition
	}{r.MatchExpr, r.Aggregate, r.Condition})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// install makes rules the evaluated ones and indexes them by source.
func (e *Engine) install(rules []*ruleState) {
	e.rules = rules
	e.dispatch = map[model.Source][]*ruleState{}
	e.anySrc = nil
	pinned := map[model.Source]bool{}
	for _, rs := range rules {
		for _, s := range rs.rule.Sources() {
			pinned[s] = true
		}
		e.m.precreate(rs.rule.Name)
	}
	for _, rs := range rules {
		if rs.rule.Sources() == nil {
			e.anySrc = append(e.anySrc, rs)
		}
	}
	for s := range pinned {
		for _, rs := range rules {
			if src := rs.rule.Sources(); src == nil || slices.Contains(src, s) {
				e.dispatch[s] = append(e.dispatch[s], rs)
			}
		}
	}
}

// Rules lists the rules whose alerts are delivered (page mode) and
// RuleGroupOverflow, with their severity. Rules in shadow mode are left out:
// their alerts are never returned.
func (e *Engine) Rules() map[string]model.Severity {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]model.Severity{OverflowRuleName: model.SeverityWarning}
	for _, rs := range e.rules {
		if rs.rule.Mode != rulefmt.ModeShadow {
			out[rs.rule.Name] = model.Severity(rs.rule.Severity)
		}
	}
	return out
}

// Firing returns the firing transition of every delivered alert firing now: after a
// restart, the alerts restored from the state file, which the caller's bookkeeping
// (the alert log's firing gauge) did not see fire.
func (e *Engine) Firing() []model.Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []model.Alert
	for _, rs := range e.rules {
		for _, g := range rs.groups {
			if g.st.state == model.StateFiring && g.st.delivered && g.st.fired != nil {
				out = append(out, *g.st.fired)
			}
		}
	}
	for _, o := range e.overflow {
		if o.fired != nil {
			out = append(out, *o.fired)
		}
	}
	return out
}

// Eval evaluates ev at now and returns the transitions it causes (nil
// almost always). ev is not retained.
func (e *Engine) Eval(now time.Time, ev model.Event) []model.Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cur = ev
	e.addr.parsed = false
	rules, ok := e.dispatch[ev.Source]
	if !ok {
		rules = e.anySrc
	}
	var out []model.Alert
	for _, rs := range rules {
		e.evalRule(rs, now, &e.cur, &out)
	}
	e.cur = model.Event{}
	return out
}

func (e *Engine) evalRule(rs *ruleState, now time.Time, ev *model.Event, out *[]model.Alert) {
	rs.evals++
	if rs.startedAt.IsZero() {
		rs.startedAt = now
	}
	ok, err := rs.rule.MatchEvent(ev)
	if err != nil {
		rs.errs++
		if now.Sub(rs.lastErrLog) >= time.Minute || rs.lastErrLog.IsZero() {
			rs.lastErrLog = now
			e.log.Warn("match expression failed; the event counts as not matching (logged once a minute per rule)",
				zap.String("rule", rs.rule.Name), zap.String("source", string(ev.Source)), zap.Error(err))
		}
		return
	}
	if !ok {
		return
	}
	rs.matches++
	if e.excepted(rs, ev, now) {
		rs.excepted++
		return
	}
	switch rs.kind {
	case kindThreshold, kindBaseline:
		g := e.groupFor(rs, ev, now, out)
		v, d := 1.0, ""
		if rs.val != nil {
			v = float64(rs.val.num(ev))
		}
		if rs.distinct != nil {
			d = distinctValue(rs.distinct, ev)
		}
		b := bucketOf(now, rs.width)
		g.win.add(b, rs.agg, v, d)
		value := g.win.value(b, rs.agg)
		e.step(rs, g, now, rs.holds(g, now, value), value, out)
	case kindEvent, kindFirstSeen:
		v := float64(ev.Rows)
		if rs.val != nil {
			v = float64(rs.val.num(ev))
		}
		if t := rs.rule.Condition.Threshold; t != nil && !t.Op.Compare(v, t.Value) {
			return
		}
		if rs.kind == kindFirstSeen && !e.firstSeen(rs, ev, now, out) {
			return
		}
		g := e.groupFor(rs, ev, now, out)
		if g.st.state == "" {
			g.value = v
		} else {
			g.value = max(g.value, v)
		}
		g.lastTrue = now
		e.step(rs, g, now, true, g.value, out)
	}
}

func distinctValue(f *field, ev *model.Event) string {
	switch f.kind {
	case kindString:
		return f.str(ev)
	case kindList:
		return strings.Join(f.list(ev), ",")
	}
	return strconv.FormatInt(f.num(ev), 10)
}

// holds reports whether an aggregate rule's condition holds for value.
func (rs *ruleState) holds(g *group, now time.Time, value float64) bool {
	c := rs.rule.Condition
	if c.Threshold != nil {
		return c.Threshold.Op.Compare(value, c.Threshold.Value)
	}
	b := c.Baseline
	if now.Sub(rs.startedAt) < b.LearnFor || value < b.Floor {
		return false
	}
	return value > g.base.mean+b.ZScore*math.Sqrt(g.base.variance)
}

// groupFor returns the group of ev, creating it, or the overflow group when
// the rule already has MaxGroups.
func (e *Engine) groupFor(rs *ruleState, ev *model.Event, now time.Time, out *[]model.Alert) *group {
	h := hashEvent(&e.h, rs.by, ev)
	for g := rs.groups[h]; g != nil; g = g.next {
		if keyEquals(rs.by, g.key, ev) {
			return g
		}
	}
	if rs.n >= e.opts.MaxGroups {
		rs.overflowed++
		if rs.over == nil {
			rs.over = rs.newGroup(nil, now)
		}
		e.noteOverflow(rs, now, out)
		return rs.over
	}
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
		v := key[i].text(f.kind)
		if v == "" {
			continue
		}
		g.labels[f.label] = v
		g.tmpl[f.name] = v
	}
	maps.Copy(g.tmpl, g.labels)
	if rs.kind == kindThreshold || rs.kind == kindBaseline {
		g.win = newWindow(rs.agg)
		g.win.head = bucketOf(now, rs.width)
	}
	if rs.kind == kindBaseline {
		g.base = &baseline{last: now.UnixNano() / int64(rs.rule.Aggregate.Window)}
	}
	return g
}

// firstSeen records the event's key and reports whether it is new: not
// seen before (or not within forget_after) and past the learning period.
func (e *Engine) firstSeen(rs *ruleState, ev *model.Event, now time.Time, out *[]model.Alert) bool {
	fs := rs.rule.Condition.FirstSeen
	learned := now.Sub(rs.startedAt) >= fs.LearnFor
	h := hashEvent(&e.h, rs.by, ev)
	for k := rs.seen[h]; k != nil; k = k.next {
		if keyEquals(rs.by, k.key, ev) {
			forgotten := fs.ForgetAfter > 0 && now.Sub(k.lastSeen) > fs.ForgetAfter
			if now.After(k.lastSeen) {
				k.lastSeen = now
			}
			return forgotten && learned
		}
	}
	if rs.nSeen >= e.opts.MaxGroups {
		rs.forgetOldestKey()
		rs.overflowed++
		e.noteOverflow(rs, now, out)
	}
	rs.seen[h] = &seenKey{key: keyOf(rs.by, ev), lastSeen: now, next: rs.seen[h]}
	rs.nSeen++
	return learned
}

// forgetOldestKey forgets the first-seen key seen longest ago: when the set
// is full, forgetting is the failure that pages (the key alerts again when
// it comes back) rather than the one that hides (not learning new keys).
func (rs *ruleState) forgetOldestKey() {
	var (
		oldH   uint64
		oldest *seenKey
	)
	for h, head := range rs.seen {
		for k := head; k != nil; k = k.next {
			if oldest == nil || k.lastSeen.Before(oldest.lastSeen) {
				oldH, oldest = h, k
			}
		}
	}
	if oldest != nil {
		rs.removeKey(oldH, oldest)
	}
}

func (rs *ruleState) removeKey(h uint64, k *seenKey) {
	var prev *seenKey
	for c := rs.seen[h]; c != nil; prev, c = c, c.next {
		if c != k {
			continue
		}
		switch {
		case prev != nil:
			prev.next = c.next
		case c.next != nil:
			rs.seen[h] = c.next
		default:
			delete(rs.seen, h)
		}
		rs.nSeen--
		return
	}
}

// excepted reports whether an unexpired exception of the rule allows ev.
func (e *Engine) excepted(rs *ruleState, ev *model.Event, now time.Time) bool {
	for i := range rs.rule.Exceptions {
		x := &rs.rule.Exceptions[i]
		switch {
		case !x.Expires.IsZero() && !now.Before(x.Expires),
			x.Role != "" && x.Role != ev.Role,
			x.Application != "" && x.Application != ev.Application,
			x.Relation != "" && x.Relation != ev.Relation,
			x.Database != "" && x.Database != ev.Database,
			x.HasQueryID && x.QueryID != ev.QueryID:
			continue
		}
		if x.ClientCIDR.IsValid() {
			a, ok := e.clientAddr(ev)
			if !ok || !x.ClientCIDR.Contains(a) {
				continue
			}
		}
		return true
	}
	return false
}

// clientAddr parses the event's client address once per event.
func (e *Engine) clientAddr(ev *model.Event) (netip.Addr, bool) {
	if !e.addr.parsed {
		e.addr.parsed = true
		a, err := netip.ParseAddr(ev.ClientAddr)
		if err != nil {
			p, perr := netip.ParsePrefix(ev.ClientAddr) // inet text may carry a /32
			a, err = p.Addr(), perr
		}
		e.addr.a, e.addr.ok = a.Unmap(), err == nil
	}
	return e.addr.a, e.addr.ok
}

// step runs the alert state machine of a group whose condition is cond at
// now: inactive → pending → firing after `for` → resolved once the
// condition has not held for keep_firing_for.
func (e *Engine) step(rs *ruleState, g *group, now time.Time, cond bool, value float64, out *[]model.Alert) {
	st := &g.st
	if cond {
		if rs.kind == kindThreshold || rs.kind == kindBaseline {
			g.lastTrue = now
		}
		if st.state == "" {
			st.state, st.activeAt = model.StatePending, now
		}
		if st.state == model.StatePending && now.Sub(st.activeAt) >= rs.rule.For {
			e.fire(rs, g, now, value, out)
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
		keep := rs.rule.KeepFiringFor
		if rs.kind == kindEvent || rs.kind == kindFirstSeen {
			keep = 0 // already in hold
		}
		if now.Sub(g.lastTrue) >= keep {
			e.resolve(rs, g, now, value, out)
		}
	}
}

func (e *Engine) fire(rs *ruleState, g *group, now time.Time, value float64, out *[]model.Alert) {
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
	fired := a
	fired.Labels, fired.Annotations = maps.Clone(labels), maps.Clone(annotations)
	g.st.state, g.st.firedAt, g.st.fired = model.StateFiring, now, &fired
	g.st.delivered = rs.rule.Mode != rulefmt.ModeShadow
	e.emit(rs, a, g.st.delivered, out)
}

func (e *Engine) resolve(rs *ruleState, g *group, now time.Time, value float64, out *[]model.Alert) {
	a := *g.st.fired // its Value is the peak while firing
	a.Time, a.State = now, model.StateResolved
	a.Labels, a.Annotations = maps.Clone(a.Labels), maps.Clone(a.Annotations)
	delivered := g.st.delivered
	g.st, g.value, g.lastTrue = alertState{}, 0, time.Time{}
	e.emit(rs, a, delivered, out)
}

// emit returns a transition to the pipeline, or for a rule in shadow mode
// logs and counts it.
func (e *Engine) emit(rs *ruleState, a model.Alert, delivered bool, out *[]model.Alert) {
	e.dirty = true
	if delivered {
		*out = append(*out, a)
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
func (e *Engine) noteOverflow(rs *ruleState, now time.Time, out *[]model.Alert) {
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
	*out = append(*out, a)
}

func fieldNames(fs []field) []string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	return names
}

// Tick returns the transitions due at now without a new event: windows
// that slid, pending alerts whose `for` passed, alerts to resolve. It also
// samples baselines, forgets old first-seen keys and idle groups, updates
// the metrics, and saves the state when a transition happened since the
// last save or SaveInterval has passed.
func (e *Engine) Tick(now time.Time) []model.Alert {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []model.Alert
	for _, a := range e.queued {
		a.Time = now
		out = append(out, a)
	}
	e.queued = nil
	for _, rs := range e.rules {
		if rs.startedAt.IsZero() {
			rs.startedAt = now
		}
		start := len(out)
		e.tickRule(rs, now, &out)
		slices.SortFunc(out[start:], func(a, b model.Alert) int { return cmp.Compare(a.Fingerprint, b.Fingerprint) })
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
			out = append(out, a)
			e.dirty = true
		}
		delete(e.overflow, rule)
	}
	if e.opts.StatePath != "" && (e.dirty || now.Sub(e.lastSave) >= e.opts.SaveInterval) {
		if err := e.saveLocked(now); err != nil {
			e.log.Error("save rule state failed; retrying at the next tick", zap.Error(err))
		}
	}
	return out
}

func (e *Engine) tickRule(rs *ruleState, now time.Time, out *[]model.Alert) {
	keep := func(g *group) bool {
		switch rs.kind {
		case kindThreshold, kindBaseline:
			b := bucketOf(now, rs.width)
			value := g.win.value(b, rs.agg)
			if g.base != nil {
				rs.sample(g, now, value)
			}
			e.step(rs, g, now, rs.holds(g, now, value), value, out)
			if g.st.state != "" || !g.win.empty(b, rs.agg) {
				return true
			}
			if g.base != nil && g.base.samples > 0 {
				// A learned baseline is kept while it is stricter than what a
				// new group would be held to (the floor).
				bl := rs.rule.Condition.Baseline
				return g.base.mean+bl.ZScore*math.Sqrt(g.base.variance) >= bl.Floor
			}
			return false
		default:
			cond := !g.lastTrue.IsZero() && now.Sub(g.lastTrue) < rs.hold
			e.step(rs, g, now, cond, g.value, out)
			return g.st.state != ""
		}
	}
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
	if fs := rs.rule.Condition.FirstSeen; fs != nil && fs.ForgetAfter > 0 {
		for h, head := range rs.seen {
			for k := head; k != nil; {
				next := k.next
				if now.Sub(k.lastSeen) > fs.ForgetAfter {
					rs.removeKey(h, k)
				}
				k = next
			}
		}
	}
}

// sample folds the aggregate into the group's baseline once per window
// period (periods are window-aligned since the Unix epoch). A group whose
// alert is pending or firing does not learn: an attack must not become the
// norm while it goes on. Periods missed while the detector was down are not
// filled in.
func (rs *ruleState) sample(g *group, now time.Time, value float64) {
	p := now.UnixNano() / int64(rs.rule.Aggregate.Window)
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
		incr := rs.alpha * diff
		b.mean += incr
		b.variance = (1 - rs.alpha) * (b.variance + diff*incr)
	}
	b.samples++
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
	e.m.alerts.WithLabelValues(name, "pending").Set(float64(pending))
	e.m.alerts.WithLabelValues(name, "firing").Set(float64(firing))
	n := rs.n + rs.nSeen
	if rs.over != nil {
		n++
	}
	e.m.groups.WithLabelValues(name).Set(float64(n))
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
	e.m.expired.WithLabelValues(name).Set(float64(expired))
}
