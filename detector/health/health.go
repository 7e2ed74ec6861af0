// Package health tracks whether each enabled source of the detector is working, for
// /readyz and the pgtripwire_source_up metric.
//
// It is not a liveness check: a process that answers at all is alive (/healthz).
package health

import (
	"maps"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Status is the readiness of every registered component. A component starts unready
// ("starting") until it reports success. Status is safe for concurrent use.
type Status struct {
	mu    sync.Mutex
	state map[string]string // component → "" when healthy, else why not
	up    *prometheus.GaugeVec
}

// New returns a Status whose components are exported as pgtripwire_source_up.
func New(reg prometheus.Registerer) *Status {
	return &Status{
		state: make(map[string]string),
		up: promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgtripwire_source_up",
			Help: "1 when the source is connected and its last poll succeeded, else 0.",
		}, []string{"source"}),
	}
}

// Register adds a component that must report healthy before the detector is ready.
func (s *Status) Register(component string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state[component] = "starting"
	s.up.WithLabelValues(component).Set(0)
}

// Forget removes a component that will not run after all (the WAL source in "auto"
// mode without its slot): it no longer holds readiness back, and its
// pgtripwire_source_up series disappears rather than reading 0 forever.
func (s *Status) Forget(component string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.state, component)
	s.up.DeleteLabelValues(component)
}

// Set records the component's latest outcome: nil is healthy.
func (s *Status) Set(component string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.state[component] = ""
		s.up.WithLabelValues(component).Set(1)
		return
	}
	s.state[component] = err.Error()
	s.up.WithLabelValues(component).Set(0)
}

// Ready reports whether every registered component is healthy, and the reason of each
// one that is not, keyed by component.
func (s *Status) Ready() (bool, map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	problems := make(map[string]string)
	for _, c := range slices.Sorted(maps.Keys(s.state)) {
		if why := s.state[c]; why != "" {
			problems[c] = why
		}
	}
	return len(problems) == 0 && len(s.state) > 0, problems
}
