package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/internal/atomicfile"
	"github.com/pgtripwire/pgtripwire/model"
)

// stateVersion is the version of the state file format. A file of another
// version is treated as unreadable (moved aside, fresh start).
const stateVersion = 1

// The state file is JSON:
//
//	{"version": 1, "saved_at": …,
//	 "rules": [{"name", "definition", "started_at",
//	            "groups": [{"key": [...], "window": {"head", "buckets": {"i": v}}, "distinct": {...},
//	                        "baseline": {...}, "alert": {...}, "value", "last_true"}],
//	            "overflow": {group}, "seen": [{"key": [...], "last_seen"}],
//	            "scopes": [{"key": [...], "first_seen", "last_seen"}]}],
//	 "overflow": [{"rule", "last", "fired"}],
//	 "adopted": [{"alert", "until"}]}
//
// Rules are matched by name and definition hash: the state of a rule whose
// match, aggregate or condition changed is not restored.
type stateFile struct {
	Version  int             `json:"version"`
	SavedAt  time.Time       `json:"saved_at"`
	Rules    []ruleSnapshot  `json:"rules"`
	Overflow []overflowState `json:"overflow,omitempty"`
	// Adopted are the alerts taken over from the alert log (see Adopt), kept so that a
	// second restart resolves them when the first would have, not later.
	Adopted []adoptedState `json:"adopted,omitempty"`
}

type adoptedState struct {
	Alert model.Alert `json:"alert"`
	Until time.Time   `json:"until"`
}

type ruleSnapshot struct {
	Name       string          `json:"name"`
	Definition string          `json:"definition"`
	StartedAt  time.Time       `json:"started_at"`
	Groups     []groupSnapshot `json:"groups,omitempty"`
	Overflow   *groupSnapshot  `json:"overflow,omitempty"`
	Seen       []seenSnapshot  `json:"seen,omitempty"`
	// Scopes are the learn_per values of a first_seen rule, each with its
	// learning start (first_seen).
	Scopes []seenSnapshot `json:"scopes,omitempty"`
}

type groupSnapshot struct {
	Key      []string          `json:"key"`
	Window   *windowSnapshot   `json:"window,omitempty"`
	Distinct map[string]int64  `json:"distinct,omitempty"`
	Baseline *baselineSnapshot `json:"baseline,omitempty"`
	Alert    *alertSnapshot    `json:"alert,omitempty"`
	Value    float64           `json:"value,omitempty"`
	LastTrue time.Time         `json:"last_true,omitzero"`
}

type windowSnapshot struct {
	Head    int64             `json:"head"`
	Buckets map[int64]float64 `json:"buckets,omitempty"` // non-empty buckets by index
}

type baselineSnapshot struct {
	Mean     float64 `json:"mean"`
	Variance float64 `json:"variance"`
	Samples  int64   `json:"samples"`
	Last     int64   `json:"last"`
}

type alertSnapshot struct {
	State     model.State  `json:"state"`
	ActiveAt  time.Time    `json:"active_at"`
	FiredAt   time.Time    `json:"fired_at,omitzero"`
	Fired     *model.Alert `json:"fired,omitempty"`
	Delivered bool         `json:"delivered,omitempty"`
}

type seenSnapshot struct {
	Key       []string  `json:"key"`
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastSeen  time.Time `json:"last_seen"`
}

type overflowState struct {
	Rule  string       `json:"rule"`
	Last  time.Time    `json:"last"`
	Fired *model.Alert `json:"fired,omitempty"`
}

// Save writes the state to StatePath now, with atomicfile.Write: a crash
// leaves the old file or the new one, and every failure to make the new one
// durable (the directory's sync included) is returned, leaving the old file
// in place. It is a no-op without StatePath.
func (e *Engine) Save(now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.opts.StatePath == "" {
		return nil
	}
	return e.saveLocked(now)
}

// Close saves the state. The engine may still be used afterwards.
func (e *Engine) Close(now time.Time) error { return e.Save(now) }

func (e *Engine) saveLocked(now time.Time) error {
	data, err := json.Marshal(e.snapshotLocked(now))
	if err != nil {
		e.m.saves.WithLabelValues("error").Inc()
		return fmt.Errorf("encode rule state: %w", err)
	}
	if err := atomicfile.WriteChecked(e.opts.StatePath, data); err != nil {
		err = fmt.Errorf("save rule state: %w", err)
		e.m.saves.WithLabelValues("error").Inc()
		e.reportSave(err)
		return err
	}
	e.m.saves.WithLabelValues("ok").Inc()
	e.reportSave(nil)
	e.lastSave, e.dirty = now, false
	return nil
}

func (e *Engine) reportSave(err error) {
	if e.opts.OnSave != nil {
		e.opts.OnSave(err)
	}
}

// Lost says why the state saved at StatePath could not be restored at start:
// damaged beyond its previous generation, or not decodable. It is nil when the
// state was restored or there was none.
func (e *Engine) Lost() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lost
}

// Held returns the fingerprints of the alerts the engine will still write a
// transition for: firing ones, and the resolutions queued for the first Tick
// (rules that changed or disappeared since the state was saved).
func (e *Engine) Held() map[string]bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	held := make(map[string]bool)
	for _, rs := range e.rules {
		rs.eachGroup(func(g *group) {
			if g.st.state == model.StateFiring && g.st.fired != nil {
				held[g.st.fired.Fingerprint] = true
			}
		})
	}
	for _, o := range e.overflow {
		if o.fired != nil {
			held[o.fired.Fingerprint] = true
		}
	}
	for _, a := range e.queued {
		held[a.Fingerprint] = true
	}
	for fp := range e.adopted {
		held[fp] = true
	}
	return held
}

// Forget drops the firing state of the alerts with these fingerprints without
// a transition: the alert log already holds their resolution (written before a
// restart whose last state save had failed). It returns how many it dropped.
func (e *Engine) Forget(fingerprints map[string]bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, rs := range e.rules {
		rs.eachGroup(func(g *group) {
			if g.st.state == model.StateFiring && g.st.fired != nil && fingerprints[g.st.fired.Fingerprint] {
				g.st = alertState{}
				n++
			}
		})
	}
	for rule, o := range e.overflow {
		if o.fired != nil && fingerprints[o.fired.Fingerprint] {
			delete(e.overflow, rule)
			n++
		}
	}
	if n > 0 {
		e.dirty = true
	}
	return n
}

func (e *Engine) snapshotLocked(now time.Time) stateFile {
	sf := stateFile{Version: stateVersion, SavedAt: now}
	for _, rs := range e.rules {
		r := ruleSnapshot{Name: rs.rule.Name, Definition: rs.def, StartedAt: rs.startedAt}
		for _, head := range rs.groups {
			for g := head; g != nil; g = g.next {
				r.Groups = append(r.Groups, rs.snapshotGroup(g))
			}
		}
		if rs.over != nil {
			s := rs.snapshotGroup(rs.over)
			r.Overflow = &s
		}
		rs.snapshotSeen(&r)
		sf.Rules = append(sf.Rules, r)
	}
	for rule, o := range e.overflow {
		sf.Overflow = append(sf.Overflow, overflowState{Rule: rule, Last: o.last, Fired: o.fired})
	}
	for _, ad := range e.adopted {
		sf.Adopted = append(sf.Adopted, adoptedState{Alert: ad.alert, Until: ad.until})
	}
	return sf
}

// snapshotSeen adds the rule's first-seen keys and learn_per scopes to r.
func (rs *ruleState) snapshotSeen(r *ruleSnapshot) {
	rs.seen.each(func(k *seenKey) {
		r.Seen = append(r.Seen, seenSnapshot{Key: encodeKey(rs.seenBy, k.key), LastSeen: k.lastSeen})
	})
	rs.scopes.each(func(k *seenKey) {
		r.Scopes = append(r.Scopes, seenSnapshot{Key: encodeKey(rs.scopeBy, k.key), FirstSeen: k.firstSeen, LastSeen: k.lastSeen})
	})
}

func (rs *ruleState) snapshotGroup(g *group) groupSnapshot {
	s := groupSnapshot{Value: g.value, LastTrue: g.lastTrue}
	if g.key != nil {
		s.Key = encodeKey(rs.by, g.key)
	}
	if w := g.win; w != nil {
		ws := &windowSnapshot{Head: w.head, Buckets: map[int64]float64{}}
		for i, v := range w.vals {
			if v != 0 && !math.IsInf(v, -1) {
				ws.Buckets[int64(i)] = v
			}
		}
		s.Window, s.Distinct = ws, w.distinct
	}
	if b := g.base; b != nil {
		s.Baseline = &baselineSnapshot{Mean: b.mean, Variance: b.variance, Samples: b.samples, Last: b.last}
	}
	if g.st.state != "" {
		s.Alert = &alertSnapshot{State: g.st.state, ActiveAt: g.st.activeAt, FiredAt: g.st.firedAt,
			Fired: g.st.fired, Delivered: g.st.delivered}
	}
	return s
}

// load restores the state saved at StatePath (see New for what happens
// when it cannot be).
func (e *Engine) load() error {
	path := e.opts.StatePath
	data, gen, damage, err := atomicfile.ReadChecked(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil && !errors.Is(err, atomicfile.ErrNoGoodGeneration) {
		return fmt.Errorf("load rule state: %w", err)
	}
	var sf stateFile
	if err == nil {
		err = json.Unmarshal(data, &sf)
	}
	if err == nil && sf.Version != stateVersion {
		err = fmt.Errorf("state file version %d, this pgtripwire reads version %d", sf.Version, stateVersion)
	}
	if err == nil {
		err = e.restore(sf)
	}
	if err != nil {
		aside := path + ".corrupt"
		if rerr := os.Rename(path, aside); rerr != nil {
			aside = ""
		}
		e.log.Error("rule state lost; starting with no baselines, first-seen keys or firing alerts",
			zap.String("path", path), zap.String("moved_to", aside), zap.Error(err))
		for _, rs := range e.rules {
			rs.startedAt, rs.groups, rs.n, rs.over = time.Time{}, map[uint64]*group{}, 0, nil
			rs.seen, rs.scopes = newKeySet(), newKeySet()
		}
		e.overflow = map[string]*overflowAlert{}
		e.adopted = map[string]*adoptedAlert{}
		e.queued = nil
		e.lost = err
		return nil
	}
	if gen == atomicfile.Previous {
		e.log.Warn("rule state damaged; its previous generation is restored: what changed after it was saved is lost",
			zap.String("path", path), zap.NamedError("damage", damage))
	}
	return nil
}

// restore applies a decoded state file. The firing alerts of rules that
// changed or disappeared are resolved at the first Tick.
func (e *Engine) restore(sf stateFile) error {
	byName := map[string]*ruleState{}
	for _, rs := range e.rules {
		byName[rs.rule.Name] = rs
	}
	for _, r := range sf.Rules {
		rs := byName[r.Name]
		if rs != nil && rs.def != r.Definition {
			rs = nil
		}
		for _, gs := range r.Groups {
			if rs == nil {
				if gs.Alert != nil && gs.Alert.State == model.StateFiring && gs.Alert.Delivered && gs.Alert.Fired != nil {
					a := *gs.Alert.Fired
					a.State = model.StateResolved
					e.queued = append(e.queued, a)
				}
				continue
			}
			key, err := decodeKey(rs.by, gs.Key, e.opts.LegacyServer)
			if err != nil {
				return fmt.Errorf("rule %s: group: %w", r.Name, err)
			}
			g, err := rs.restoreGroup(key, gs)
			if err != nil {
				return fmt.Errorf("rule %s: %w", r.Name, err)
			}
			h := hashKey(&e.h, rs.by, key)
			g.next = rs.groups[h]
			rs.groups[h] = g
			rs.n++
		}
		if rs == nil {
			continue
		}
		rs.startedAt = r.StartedAt
		if r.Overflow != nil {
			g, err := rs.restoreGroup(nil, *r.Overflow)
			if err != nil {
				return fmt.Errorf("rule %s: overflow group: %w", r.Name, err)
			}
			rs.over = g
		}
		for _, s := range r.Seen {
			key, err := decodeKey(rs.seenBy, s.Key, nil)
			if err != nil {
				return fmt.Errorf("rule %s: first-seen key: %w", r.Name, err)
			}
			rs.seen.add(hashKey(&e.h, rs.seenBy, key), key, s.FirstSeen, s.LastSeen)
		}
		for _, s := range r.Scopes {
			key, err := decodeKey(rs.scopeBy, s.Key, nil)
			if err != nil {
				return fmt.Errorf("rule %s: learn_per value: %w", r.Name, err)
			}
			if s.FirstSeen.IsZero() {
				return fmt.Errorf("rule %s: learn_per value without its learning start", r.Name)
			}
			rs.scopes.add(hashKey(&e.h, rs.scopeBy, key), key, s.FirstSeen, s.LastSeen)
		}
	}
	for _, o := range sf.Overflow {
		e.overflow[o.Rule] = &overflowAlert{last: o.Last, fired: o.Fired}
	}
	for _, ad := range sf.Adopted {
		e.adopted[ad.Alert.Fingerprint] = &adoptedAlert{alert: ad.Alert, until: ad.Until}
	}
	return nil
}

func (rs *ruleState) restoreGroup(key []keyVal, s groupSnapshot) (*group, error) {
	g := rs.newGroup(key, time.Unix(0, 0))
	g.value, g.lastTrue = s.Value, s.LastTrue
	if g.win != nil {
		if s.Window == nil {
			return nil, errors.New("group without its window")
		}
		g.win.head = s.Window.Head
		for i, v := range s.Window.Buckets {
			if i < 0 || i >= buckets {
				return nil, fmt.Errorf("window bucket %d out of range", i)
			}
			g.win.vals[i] = v
			g.win.sum += v // a max window never reads its sum
		}
		if g.win.distinct != nil && s.Distinct != nil {
			g.win.distinct = s.Distinct
		}
	}
	if g.base != nil && s.Baseline != nil {
		*g.base = baseline{mean: s.Baseline.Mean, variance: s.Baseline.Variance, samples: s.Baseline.Samples, last: s.Baseline.Last}
	}
	if a := s.Alert; a != nil {
		if a.State == model.StateFiring && a.Fired == nil {
			return nil, errors.New("firing alert without its transition")
		}
		g.st = alertState{state: a.State, activeAt: a.ActiveAt, firedAt: a.FiredAt, fired: a.Fired, delivered: a.Delivered}
	}
	return g, nil
}
