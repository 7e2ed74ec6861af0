package engine

import (
	"hash/maphash"
	"net/netip"
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
	// LegacyServer holds, by field name (model.ServerFields), the server the groups
	// of a state file written before groups had the server fields belong to: the one
	// server the detector watched then. Its windows, baselines and firing alerts go
	// on under it (a firing alert keeps its labels until it resolves). Absent fields
	// are empty.
	LegacyServer map[string]string
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
	// OnSave, when set, is told the outcome of every save of the state: nil,
	// or why it failed (the detector is unready until a save succeeds again).
	OnSave func(err error)
	// Again, when set, is called during Eval for each event counted by a rule with a
	// response (rulefmt.Rule.Response) whose alert was already firing, and delivered,
	// before the event: a, the firing alert, continues its episode without a new
	// transition, but the event is a new reading session the detector may respond to
	// as it responded to the one that fired. It must not block or call the engine.
	Again      func(a model.Alert, ev *model.Event)
	Logger     *zap.Logger
	Registerer prometheus.Registerer
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
	// adopted are alerts the alert log says are firing that the restored state did not
	// hold (see Adopt), by fingerprint.
	adopted map[string]*adoptedAlert

	lastSave time.Time
	dirty    bool // a transition since the last save
	// lost says why the state saved at StatePath could not be restored at start (nil
	// when it was, or there was none): the detector says so with an alert.
	lost error

	// out collects the transitions of the Eval or Tick in progress: a field,
	// not a variable passed down by address, which would escape through the
	// kind interface and cost an allocation per event.
	out []model.Alert

	h    maphash.Hash
	cur  model.Event // the event being evaluated: its address does not escape per call
	addr struct {
		parsed, ok bool
		a          netip.Addr
	}
}

// New returns an engine for the rules of groups, with the state saved at
// opts.StatePath when there is one. The state file is sealed with a checksum
// and keeps its previous generation (atomicfile.WriteChecked): a damaged file
// falls back to the previous generation; when neither can be restored (or
// the file is of an unknown version), it is moved aside to
// StatePath+".corrupt", the engine starts fresh and Lost says why. A file
// that cannot be read at all (permissions, I/O) is an error, since starting
// fresh would forget every baseline and re-fire every firing alert.
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
		adopted:  map[string]*adoptedAlert{},
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
		rs.adopt(o)
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
		rs.eachGroup(func(g *group) {
			if g.st.state == model.StateFiring && g.st.delivered && g.st.fired != nil {
				out = append(out, *g.st.fired)
			}
		})
	}
	for _, o := range e.overflow {
		if o.fired != nil {
			out = append(out, *o.fired)
		}
	}
	for _, ad := range e.adopted {
		out = append(out, ad.alert)
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
	for _, rs := range rules {
		e.evalRule(rs, now, &e.cur)
	}
	e.cur = model.Event{}
	out := e.out
	e.out = nil
	return out
}

// evalRule does what every kind of rule does with an event (match,
// exceptions, counters) and hands a counted event to the rule's kind.
func (e *Engine) evalRule(rs *ruleState, now time.Time, ev *model.Event) {
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
	if rs.rule.Response == nil || e.opts.Again == nil {
		rs.kind.observe(e, rs, ev, now)
		return
	}
	out := len(e.out)
	rs.kind.observe(e, rs, ev, now)
	g := e.groupOf(rs, ev)
	if g == nil || g.st.state != model.StateFiring || g.st.fired == nil || !g.st.delivered {
		return
	}
	for _, a := range e.out[out:] {
		if a.Fingerprint == g.st.fired.Fingerprint {
			return // this event made it fire: the firing transition says so
		}
	}
	e.opts.Again(*g.st.fired, ev)
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
