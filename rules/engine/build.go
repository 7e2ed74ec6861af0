package engine

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// contractKey is the group key of a rule without aggregate: its alerts carry
// the alert contract's labels.
var contractKey = []string{"source", "database", "relation", model.ColumnsField.Name, "role", "client_addr", "application"}

// build makes the rules of groups ready to evaluate, reporting every problem.
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
			rs, err := newRuleState(r, e.opts)
			if err != nil {
				errs = append(errs, fmt.Errorf("rule %s: %w", r.Name, err))
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

func newRuleState(r *rulefmt.Rule, opts Options) (*ruleState, error) {
	k, by, err := newKind(r, opts)
	if err != nil {
		return nil, err
	}
	rs := &ruleState{rule: r, kind: k, groups: map[uint64]*group{}, seen: newKeySet(), scopes: newKeySet()}
	if rs.by, err = groupFields(withServer(by)); err != nil {
		return nil, fmt.Errorf("group: %w", err)
	}
	if fs := r.Condition.FirstSeen; fs != nil {
		if rs.seenBy, err = groupFields(fs.Key); err != nil {
			return nil, fmt.Errorf("first_seen key: %w", err)
		}
		if rs.scopeBy, err = groupFields(fs.LearnPer); err != nil {
			return nil, fmt.Errorf("first_seen learn_per: %w", err)
		}
		if len(rs.scopeBy) == 0 {
			rs.scopeBy = nil
		}
	}
	rs.fixed = map[string]string{}
	if src := r.Sources(); len(src) == 1 && !slices.Contains(by, "source") {
		rs.fixed[model.LabelSource] = string(src[0])
	}
	rs.def = definition(r)
	return rs, nil
}

// withServer appends to a group key the server fields it does not list
// (model.ServerFields), at its end: a state file written before they existed
// decodes with them empty (decodeKey).
func withServer(by []string) []string {
	out := slices.Clip(by)
	for _, f := range model.ServerFields {
		if !slices.Contains(by, f) {
			out = append(out, f)
		}
	}
	return out
}

// newKind returns the kind of rule r is, from its aggregate and condition,
// and the names of the fields of its group key. It is the one place that
// tells the kinds apart: the engine calls them through the kind interface.
func newKind(r *rulefmt.Rule, opts Options) (kind, []string, error) {
	hold := r.KeepFiringFor
	if hold <= 0 {
		hold = opts.ResolveAfter
	}
	c := r.Condition
	if a := r.Aggregate; a != nil {
		if a.Window <= 0 {
			return nil, nil, errors.New("aggregate window must be positive")
		}
		w, err := newWindowed(a)
		switch {
		case c.Threshold == nil && c.Baseline == nil:
			return nil, nil, errors.New("an aggregate needs a threshold or baseline condition")
		case err != nil:
			return nil, nil, err
		case c.FirstSeen != nil && c.Threshold != nil:
			return &newKeysRule{thresholdRule: thresholdRule{windowed: w, cond: *c.Threshold}, newKeys: newKeys{cond: *c.FirstSeen}}, a.By, nil
		case c.Baseline != nil:
			// α = 2/(N+1) with N = learn_for / window periods: an EWMA
			// that remembers about learn_for of history.
			n := float64(c.Baseline.LearnFor) / float64(a.Window)
			return &baselineRule{windowed: w, cond: *c.Baseline, period: a.Window, alpha: 2 / (max(n, 2) + 1)}, a.By, nil
		}
		return &thresholdRule{windowed: w, cond: *c.Threshold}, a.By, nil
	}
	if c.FirstSeen != nil {
		return &firstSeenRule{held: held{hold: hold}, newKeys: newKeys{cond: *c.FirstSeen}}, c.FirstSeen.Key, nil
	}
	k := &eventRule{held: held{hold: hold}, threshold: c.Threshold}
	name := "rows"
	if c.Threshold != nil {
		name = cmp.Or(c.Threshold.Field, name)
	}
	f, ok := numericField(name)
	if !ok {
		return nil, nil, fmt.Errorf("threshold field %q is not numeric", name)
	}
	k.val = f
	return k, contractKey, nil
}

// newWindowed resolves the function and field of an aggregate.
func newWindowed(a *rulefmt.Aggregate) (windowed, error) {
	w := windowed{width: max(a.Window/buckets, time.Nanosecond)}
	switch a.Function {
	case rulefmt.AggCount:
		w.agg = aggCount
	case rulefmt.AggSum:
		w.agg = aggSum
	case rulefmt.AggMax:
		w.agg = aggMax
	case rulefmt.AggCountDistinct:
		w.agg = aggDistinct
	default:
		return w, fmt.Errorf("unknown aggregate function %q", a.Function)
	}
	var f *model.EventField
	if a.Field != "" {
		ff, err := lookupField(a.Field)
		if err != nil {
			return w, fmt.Errorf("aggregate field: %w", err)
		}
		f = &ff
	}
	switch w.agg {
	case aggSum, aggMax:
		if f == nil || f.Type != model.FieldInt {
			return w, fmt.Errorf("%s needs a numeric field", a.Function)
		}
	case aggDistinct:
		if f == nil {
			return w, errors.New("count_distinct needs a field")
		}
		w.distinct = f
		return w, nil
	}
	w.val = f // nil for count: each event counts 1
	return w, nil
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
