package builtin

import (
	"maps"
	"slices"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/alert"
)

// firingSet is the state of a rule whose alerts fire on one matching event and resolve
// after resolveAfter without another: firing alerts by fingerprint, with when they
// last matched. The zero value is not usable; use newFiringSet.
type firingSet struct {
	resolveAfter time.Duration
	byFP         map[string]*firingAlert
}

type firingAlert struct {
	alert    alert.Alert
	lastSeen time.Time
}

func newFiringSet(resolveAfter time.Duration) firingSet {
	return firingSet{resolveAfter: resolveAfter, byFP: make(map[string]*firingAlert)}
}

// refresh notes a new match of an alert already firing, keeping the largest value, and
// reports whether it was firing (then there is no new transition).
func (s firingSet) refresh(fp string, now time.Time, value float64) bool {
	f, ok := s.byFP[fp]
	if ok {
		f.lastSeen = now
		f.alert.Value = max(f.alert.Value, value)
	}
	return ok
}

// fire records a new firing alert and returns its transition.
func (s firingSet) fire(a alert.Alert, now time.Time) []alert.Alert {
	s.byFP[a.Fingerprint] = &firingAlert{alert: a, lastSeen: now}
	return []alert.Alert{a}
}

// resolveQuiet resolves, in fingerprint order, the alerts quiet for resolveAfter at now.
func (s firingSet) resolveQuiet(now time.Time) []alert.Alert {
	var resolved []alert.Alert
	for _, fp := range slices.Sorted(maps.Keys(s.byFP)) {
		f := s.byFP[fp]
		if now.Sub(f.lastSeen) < s.resolveAfter {
			continue
		}
		a := f.alert
		a.Time, a.State = now, alert.StateResolved
		resolved = append(resolved, a)
		delete(s.byFP, fp)
	}
	return resolved
}
