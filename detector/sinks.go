package detector

import (
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/notify"
	"github.com/pgtripwire/pgtripwire/model"
)

// newAlerting opens every sink the alerts section names — the alert log, Alertmanager,
// webhooks — composed into one notify stage, and puts the pipeline in front of it, so
// that transitions flow evaluator → pipeline → notifier. restored are the alerts firing
// before a restart, which the alert log's gauges count. The caller runs both and closes
// the notifier after.
func newAlerting(cfg *config.Config, deps Deps, h *health.Status, eval Evaluator, restored []model.Alert) (*notify.Notifier, *pipeline, error) {
	nc, err := notifyConfig(cfg)
	if err != nil {
		return nil, nil, &ConfigError{Err: err}
	}
	if cfg.Alerts.Stdout {
		nc.Stdout = deps.Stdout
	}
	nc.Now = deps.Now
	n, err := notify.New(nc, h, deps.Logger, deps.Registry)
	if err != nil {
		return nil, nil, err
	}
	for rule, severity := range eval.Rules() {
		n.AlertLog().PrecreateRule(rule, severity)
	}
	for _, a := range restored {
		n.AlertLog().Restored(a)
	}
	return n, newPipeline(eval, n, deps.Now, deps.Logger, deps.Registry), nil
}
