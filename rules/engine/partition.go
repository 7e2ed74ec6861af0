package engine

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/pgtripwire/pgtripwire/model"
)

// A partition is the part of the engine's state that belongs to one watched
// cluster: what a detector that takes the cluster over from another resumes
// (high availability, docs/deployment.md). It holds
//
//   - the groups whose key's cluster field is the cluster's (every rule groups by
//     it: withServer), with their windows, baselines and alerts;
//   - every first-seen set and learn_per scope, which name no server and are
//     fleet-wide: taking a partition adds its keys to those known;
//   - each rule's learning start, and the alerts adopted from the alert log whose
//     cluster label is the cluster's.
//
// A rule's overflow group and RuleGroupOverflow alerts stay with the engine: they
// count events of every cluster.
type partitionFile struct {
	Version int            `json:"version"`
	Cluster string         `json:"cluster"`
	Rules   []ruleSnapshot `json:"rules"`
	Adopted []adoptedState `json:"adopted,omitempty"`
}

// Partition returns the encoded state of cluster's groups (see partitionFile), for
// Take. The minimal configuration's one cluster is "". It holds no time of its own
// (whoever stores it says when); groups and keys come in map order.
func (e *Engine) Partition(cluster string) ([]byte, error) {
	// Encoded outside the lock: evaluation waits only for the copy.
	pf := e.partition(cluster)
	data, err := json.Marshal(pf)
	if err != nil {
		return nil, fmt.Errorf("encode the rule state of cluster %q: %w", cluster, err)
	}
	return data, nil
}

func (e *Engine) partition(cluster string) partitionFile {
	e.mu.Lock()
	defer e.mu.Unlock()
	pf := partitionFile{Version: stateVersion, Cluster: cluster}
	for _, rs := range e.rules {
		r := ruleSnapshot{Name: rs.rule.Name, Definition: rs.def, StartedAt: rs.startedAt}
		at := clusterField(rs)
		rs.eachGroup(func(g *group) {
			if at >= 0 && g.key != nil && g.key[at].s == cluster {
				gs := rs.snapshotGroup(g)
				gs.Distinct = maps.Clone(gs.Distinct) // the live map: encoded after the lock
				r.Groups = append(r.Groups, gs)
			}
		})
		rs.snapshotSeen(&r)
		pf.Rules = append(pf.Rules, r)
	}
	for _, ad := range e.adopted {
		if ad.alert.Labels[model.LabelCluster] == cluster {
			pf.Adopted = append(pf.Adopted, adoptedState{Alert: ad.alert, Until: ad.until})
		}
	}
	return pf
}

// Take restores a partition written by Partition, of this engine or another
// detector's: the groups of its cluster replace the engine's own (Release, then
// the partition's), its first-seen keys and learn_per scopes are added to those
// known (a key known to both keeps its earlier learning start and its later last
// sighting), and each rule's learning start is the earlier of both. Rules the
// engine does not have, or has with another definition, are skipped, their
// delivered firing alerts resolved at the next Tick, as at a restart. On error
// nothing of the partition is taken.
func (e *Engine) Take(data []byte) (cluster string, err error) {
	var pf partitionFile
	if err := json.Unmarshal(data, &pf); err != nil {
		return "", fmt.Errorf("decode rule state: %w", err)
	}
	if pf.Version != stateVersion {
		return pf.Cluster, fmt.Errorf("rule state version %d, this pgtripwire reads version %d", pf.Version, stateVersion)
	}
	e.mu.Lock()
	defer e.mu.Unlock()

	// Decode everything first, so that a bad partition changes nothing.
	type taken struct {
		rs             *ruleState
		snap           *ruleSnapshot
		groups         []*group
		seen, scopes   [][]keyVal
		seenAt, scoped []seenSnapshot
	}
	byName := map[string]*ruleState{}
	for _, rs := range e.rules {
		byName[rs.rule.Name] = rs
	}
	var (
		all    []taken
		queued []model.Alert
	)
	for i := range pf.Rules {
		r := &pf.Rules[i]
		rs := byName[r.Name]
		if rs == nil || rs.def != r.Definition {
			for _, gs := range r.Groups {
				if a := gs.Alert; a != nil && a.State == model.StateFiring && a.Delivered && a.Fired != nil {
					res := *a.Fired
					res.State = model.StateResolved
					queued = append(queued, res)
				}
			}
			continue
		}
		t := taken{rs: rs, snap: r}
		at := clusterField(rs)
		for _, gs := range r.Groups {
			key, err := decodeKey(rs.by, gs.Key, nil)
			if err != nil {
				return pf.Cluster, fmt.Errorf("rule %s: group: %w", r.Name, err)
			}
			if at < 0 || key[at].s != pf.Cluster {
				return pf.Cluster, fmt.Errorf("rule %s: a group of cluster %q in the state of cluster %q", r.Name, key[max(at, 0)].s, pf.Cluster)
			}
			g, err := rs.restoreGroup(key, gs)
			if err != nil {
				return pf.Cluster, fmt.Errorf("rule %s: %w", r.Name, err)
			}
			t.groups = append(t.groups, g)
		}
		for _, s := range r.Seen {
			key, err := decodeKey(rs.seenBy, s.Key, nil)
			if err != nil {
				return pf.Cluster, fmt.Errorf("rule %s: first-seen key: %w", r.Name, err)
			}
			t.seen, t.seenAt = append(t.seen, key), append(t.seenAt, s)
		}
		for _, s := range r.Scopes {
			key, err := decodeKey(rs.scopeBy, s.Key, nil)
			if err != nil {
				return pf.Cluster, fmt.Errorf("rule %s: learn_per value: %w", r.Name, err)
			}
			if s.FirstSeen.IsZero() {
				return pf.Cluster, fmt.Errorf("rule %s: learn_per value without its learning start", r.Name)
			}
			t.scopes, t.scoped = append(t.scopes, key), append(t.scoped, s)
		}
		all = append(all, t)
	}

	e.releaseLocked(pf.Cluster)
	for _, t := range all {
		rs := t.rs
		if !t.snap.StartedAt.IsZero() && (rs.startedAt.IsZero() || t.snap.StartedAt.Before(rs.startedAt)) {
			rs.startedAt = t.snap.StartedAt
		}
		for _, g := range t.groups {
			h := hashKey(&e.h, rs.by, g.key)
			g.next = rs.groups[h]
			rs.groups[h] = g
			rs.n++
		}
		for i, key := range t.seen {
			e.merge(&rs.seen, rs.seenBy, key, t.seenAt[i])
		}
		for i, key := range t.scopes {
			e.merge(&rs.scopes, rs.scopeBy, key, t.scoped[i])
		}
	}
	for _, ad := range pf.Adopted {
		if ad.Alert.Labels[model.LabelCluster] == pf.Cluster {
			e.adopted[ad.Alert.Fingerprint] = &adoptedAlert{alert: ad.Alert, until: ad.Until}
		}
	}
	e.queued = append(e.queued, queued...)
	e.dirty = true
	return pf.Cluster, nil
}

// merge adds a first-seen key or learn_per scope to set, or updates the one known.
func (e *Engine) merge(set *keySet, by []model.EventField, key []keyVal, s seenSnapshot) {
	h := hashKey(&e.h, by, key)
	for k := set.m[h]; k != nil; k = k.next {
		if slices.Equal(encodeKey(by, k.key), encodeKey(by, key)) {
			if !s.FirstSeen.IsZero() && (k.firstSeen.IsZero() || s.FirstSeen.Before(k.firstSeen)) {
				k.firstSeen = s.FirstSeen
			}
			if s.LastSeen.After(k.lastSeen) {
				k.lastSeen = s.LastSeen
			}
			return
		}
	}
	set.add(h, key, s.FirstSeen, s.LastSeen)
}

// Release drops the groups of cluster and the alerts adopted for it, without a
// transition: another detector watches the cluster now, and its alerts are that
// detector's to resolve. First-seen keys stay known.
func (e *Engine) Release(cluster string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.releaseLocked(cluster)
}

func (e *Engine) releaseLocked(cluster string) {
	for _, rs := range e.rules {
		at := clusterField(rs)
		if at < 0 {
			continue
		}
		for h, head := range rs.groups {
			var kept *group
			for g := head; g != nil; {
				next := g.next
				if g.key[at].s == cluster {
					rs.n--
				} else {
					g.next, kept = kept, g
				}
				g = next
			}
			if kept == nil {
				delete(rs.groups, h)
			} else {
				rs.groups[h] = kept
			}
		}
	}
	for fp, ad := range e.adopted {
		if ad.alert.Labels[model.LabelCluster] == cluster {
			delete(e.adopted, fp)
		}
	}
}

// clusterField is the index of the cluster field in the rule's group key, -1
// when it has none (every rule built by this package has one).
func clusterField(rs *ruleState) int {
	return slices.IndexFunc(rs.by, func(f model.EventField) bool { return f.Name == model.LabelCluster })
}
