package engine

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics of the engine. Per-event counts are kept in plain integers by the
// rule and added to the counters on Tick: an atomic add per rule per event
// would cost more than the evaluation itself.
type metrics struct {
	evaluations  *prometheus.CounterVec
	matches      *prometheus.CounterVec
	excepted     *prometheus.CounterVec
	evalErrors   *prometheus.CounterVec
	overflow     *prometheus.CounterVec
	shadowAlerts *prometheus.CounterVec
	alerts       *prometheus.GaugeVec
	groups       *prometheus.GaugeVec
	expired      *prometheus.GaugeVec
	saves        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		evaluations: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_rule_evaluations_total",
			Help: "Events a rule's match expression was evaluated on (events of sources its match excludes are skipped).",
		}, []string{"rule"}),
		matches: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_rule_matches_total",
			Help: "Events a rule's match expression was true for, exceptions included.",
		}, []string{"rule"}),
		excepted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_rule_excepted_events_total",
			Help: "Matching events a rule did not count because an exception allowed them.",
		}, []string{"rule"}),
		evalErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_rule_evaluation_errors_total",
			Help: "Events whose match expression failed to evaluate (counted as not matching).",
		}, []string{"rule"}),
		overflow: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_rule_groups_overflow_total",
			Help: "Events counted in a rule's overflow group, and first-seen keys forgotten, because the rule tracked its maximum number of groups.",
		}, []string{"rule"}),
		shadowAlerts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_rule_shadow_alerts_total",
			Help: "Alerts a rule in shadow mode would have fired (logged, not delivered).",
		}, []string{"rule"}),
		alerts: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgtripwire_rule_alerts",
			Help: "Alerts of a rule by state (pending, firing), shadow rules included.",
		}, []string{"rule", "state"}),
		groups: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgtripwire_rule_groups",
			Help: "Groups a rule tracks (windows, baselines, alerts); first-seen keys are counted too.",
		}, []string{"rule"}),
		expired: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pgtripwire_rule_exceptions_expired",
			Help: "Exceptions of a rule that have expired and no longer apply: remove them from the rule file.",
		}, []string{"rule"}),
		saves: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_rule_state_saves_total",
			Help: "Saves of the rule state file, by result (ok, error).",
		}, []string{"result"}),
	}
}

// precreate makes the rule's series exist at zero.
func (m *metrics) precreate(rule string) {
	for _, v := range []*prometheus.CounterVec{m.evaluations, m.matches, m.excepted, m.evalErrors, m.overflow, m.shadowAlerts} {
		v.WithLabelValues(rule)
	}
	m.alerts.WithLabelValues(rule, "pending")
	m.alerts.WithLabelValues(rule, "firing")
	m.groups.WithLabelValues(rule)
	m.expired.WithLabelValues(rule)
}

// forget removes the series of a rule no longer loaded.
func (m *metrics) forget(rule string) {
	for _, v := range []*prometheus.CounterVec{m.evaluations, m.matches, m.excepted, m.evalErrors, m.overflow, m.shadowAlerts} {
		v.DeleteLabelValues(rule)
	}
	m.alerts.DeleteLabelValues(rule, "pending")
	m.alerts.DeleteLabelValues(rule, "firing")
	m.groups.DeleteLabelValues(rule)
	m.expired.DeleteLabelValues(rule)
}
