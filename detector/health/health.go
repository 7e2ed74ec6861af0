// Package health tracks whether each enabled source of the detector is working, for
// /readyz and the pgtripwire_source_up metric.
//
// It is not a liveness check: a process that answers at all is alive (/healthz).
package health

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Server names where a component watches: the labels cluster, server and database of
// its pgtripwire_source_up series. The zero Server is the detector's own components
// (the rule state, delivery).
type Server struct {
	Cluster, Server, Database string
}

// String is how /readyz names the place: "cluster/server/database" ("server/database"
// without a cluster), "" for the zero Server.
func (s Server) String() string {
	switch {
	case s == (Server{}):
		return ""
	case s.Cluster == "":
		return s.Server + "/" + s.Database
	}
	return s.Cluster + "/" + s.Server + "/" + s.Database
}

type key struct {
	component string
	at        Server
}

// name is the component as Ready reports it: its name, followed by where it watches
// when it watches one of several servers or databases.
func (k key) name() string {
	if k.at == (Server{}) {
		return k.component
	}
	return k.component + " (" + k.at.String() + ")"
}

// Status is the readiness of every registered component. A component starts unready
// ("starting") until it reports success. Status is safe for concurrent use.
type Status struct {
	mu    sync.Mutex
	state map[key]string // "" when healthy, else why not
	up    *prometheus.GaugeVec
}

// New returns a Status whose components are exported as pgtripwire_source_up.
func New(reg prometheus.Registerer) *Status {
	return &Status{
		state: make(map[key]string),
		up: promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgtripwire_source_up",
			Help: "1 when the source is connected and its last poll succeeded, else 0.",
		}, []string{"source", "cluster", "server", "database"}),
	}
}

func (s *Status) gauge(k key) prometheus.Gauge {
	return s.up.WithLabelValues(k.component, k.at.Cluster, k.at.Server, k.at.Database)
}

// Register adds a component that must report healthy before the detector is ready.
func (s *Status) Register(component string) { s.register(key{component: component}) }

// Forget removes a component that will not run after all (the WAL source in "auto"
// mode without its slot): it no longer holds readiness back, and its
// pgtripwire_source_up series disappears rather than reading 0 forever.
func (s *Status) Forget(component string) { s.forget(key{component: component}) }

// ForgetCluster removes every component that watches cluster: another detector
// watches it now (high availability), and this one's sources for it have stopped.
func (s *Status) ForgetCluster(cluster string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.state {
		if k.at != (Server{}) && k.at.Cluster == cluster {
			delete(s.state, k)
			s.up.DeleteLabelValues(k.component, k.at.Cluster, k.at.Server, k.at.Database)
		}
	}
}

// Set records the component's latest outcome: nil is healthy.
func (s *Status) Set(component string, err error) { s.set(key{component: component}, err) }

func (s *Status) register(k key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state[k] = "starting"
	s.gauge(k).Set(0)
}

func (s *Status) forget(k key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.state, k)
	s.up.DeleteLabelValues(k.component, k.at.Cluster, k.at.Server, k.at.Database)
}

func (s *Status) set(k key, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.state[k] = ""
		s.gauge(k).Set(1)
		return
	}
	s.state[k] = err.Error()
	s.gauge(k).Set(0)
}

// At returns the components that watch at: the same Status, whose series and
// readiness problems name the server and database.
func (s *Status) At(at Server) *Scoped { return &Scoped{s: s, at: at} }

// Scoped is the part of a Status that watches one server and database: Register,
// Forget and Set as Status's, with their place.
type Scoped struct {
	s  *Status
	at Server
}

// Register adds a component at the scope's place.
func (c *Scoped) Register(component string) { c.s.register(key{component, c.at}) }

// Forget removes a component at the scope's place.
func (c *Scoped) Forget(component string) { c.s.forget(key{component, c.at}) }

// Set records the outcome of a component at the scope's place.
func (c *Scoped) Set(component string, err error) { c.s.set(key{component, c.at}, err) }

// Ready reports whether every registered component is healthy, and the reason of each
// one that is not, keyed by component (followed by "(cluster/server/database)" for a
// component that watches a place).
func (s *Status) Ready() (bool, map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	problems := make(map[string]string)
	for k, why := range s.state {
		if why != "" {
			problems[k.name()] = why
		}
	}
	return len(problems) == 0 && len(s.state) > 0, problems
}
