package detector

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/detector/response"
	"github.com/pgtripwire/pgtripwire/model"
)

// autoResponder is the automatic response of precise rules: once a firing alert's
// evidence is captured it terminates the session that made the rule fire — that
// session only, identified by its pid and backend start, never a role's other sessions,
// never a lock or a revoke, which a human decides with `pgtripwire respond`. In shadow
// mode it records what it would have done and does nothing. Every response, shadow or
// not, refused or failed, becomes ResponseTaken lines through the pipeline's sinks.
//
// It runs in the evidence capturer's goroutine (evidence.Options.After), which takes
// urgent captures first.
type autoResponder struct {
	mode    config.ResponseMode
	guard   response.Guard
	connect func(ctx context.Context) (*pgx.Conn, error)
	record  func(ctx context.Context, alerts []model.Alert)
	now     func() time.Time
	log     *zap.Logger

	conn      *pgx.Conn // the responder's connection; nil until needed, or after it broke
	responses *prometheus.CounterVec
}

func newAutoResponder(cfg *config.Config, connect func(ctx context.Context) (*pgx.Conn, error), detectorRole string,
	record func(ctx context.Context, alerts []model.Alert), now func() time.Time, log *zap.Logger, reg prometheus.Registerer) *autoResponder {
	r := &autoResponder{
		mode: cfg.Response.Automatic,
		// An application's session that returned a canary row is SQL injection through
		// the application: terminating that one pooled connection stops the dump
		// without taking the application down, so roles.application are not spared.
		guard:   response.Guard{ApplicationRoles: cfg.Roles.Application, DetectorRole: detectorRole, Force: true},
		connect: connect,
		record:  record,
		now:     now,
		log:     log.Named("response"),
		responses: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "pgtripwire_automatic_responses_total",
			Help: "Automatic responses of precise rules, by rule and outcome (applied, partial, refused, failed, shadow).",
		}, []string{"rule", "outcome"}),
	}
	return r
}

// respond acts on one captured alert of a rule with a response.
func (r *autoResponder) respond(ctx context.Context, e *evidence.Evidence, in evidence.Input) {
	only := *e
	only.Sessions = nil
	if in.Trigger != nil && in.Trigger.PID != 0 {
		for _, s := range e.Sessions {
			if s.PID == in.Trigger.PID {
				only.Sessions = append(only.Sessions, s)
			}
		}
	}
	p, err := response.NewPlan(&only, []response.Action{response.Terminate}, r.guard)
	if err != nil {
		r.log.Error("automatic response not planned", zap.String("fingerprint", e.Fingerprint), zap.Error(err))
		r.responses.WithLabelValues(e.Rule, response.OutcomeFailed).Inc()
		return
	}
	origin := response.Origin{By: response.ByAutomatic, Actor: "pgtripwire", Time: r.now()}
	var res *response.Result
	if r.mode == config.ResponseOn && len(p.Steps) > 0 {
		res = r.apply(ctx, p)
	} else if r.mode == config.ResponseOn {
		// Nothing to run (the session was gone, or refused): recorded as such.
		res = &response.Result{}
		for _, rf := range p.Refused {
			res.Steps = append(res.Steps, response.StepResult{Action: rf.Action, Target: rf.Target, Outcome: response.Refused, Detail: rf.Reason})
		}
	}
	alerts := response.Record(p, res, origin)
	outcome := alerts[0].Labels[response.LabelOutcome]
	r.responses.WithLabelValues(e.Rule, outcome).Inc()
	r.log.Warn("automatic response", zap.String("rule", e.Rule), zap.String("fingerprint", e.Fingerprint),
		zap.String("role", p.Role), zap.String("outcome", outcome))
	r.record(ctx, alerts)
}

// apply runs p on the responder's connection, opening it when needed.
func (r *autoResponder) apply(ctx context.Context, p *response.Plan) *response.Result {
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if r.conn == nil {
		conn, err := r.connect(actx)
		if err != nil {
			return response.NotApplied(p, err)
		}
		r.conn = conn
	}
	res := response.Apply(actx, r.conn, p)
	if r.conn.IsClosed() {
		r.conn = nil
	}
	return res
}

// close closes the responder's connection.
func (r *autoResponder) close(ctx context.Context) {
	if r.conn != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = r.conn.Close(cctx)
		r.conn = nil
	}
}

// responderConfig is the connection of response.dsn. Without one the automatic
// response can only be shadowed: response.automatic on requires it (the config
// checks), shadow records without connecting.
func responderConfig(cfg *config.Config) (*pgx.ConnConfig, error) {
	if cfg.Response.DSN == "" {
		return pgx.ParseConfig("")
	}
	c, err := pgx.ParseConfig(cfg.Response.DSN)
	if err != nil {
		return nil, &ConfigError{Err: errors.New("response.dsn (or PGTRIPWIRE_RESPONSE_DSN) is not a valid connection string")}
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	return c, nil
}
