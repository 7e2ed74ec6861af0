package detector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/detector/response"
	"github.com/pgtripwire/pgtripwire/detector/source"
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
	mode  config.ResponseMode
	guard response.Guard
	// cluster and instance are the server response.dsn connects to, as alerts name
	// it (config.ServerOf): a session on another server is not the responder's to end.
	cluster, instance string
	connect           func(ctx context.Context) (*pgx.Conn, error)
	record            func(ctx context.Context, alerts []model.Alert)
	now               func() time.Time
	log               *zap.Logger

	conn      *pgx.Conn // the responder's connection; nil until needed, or after it broke
	retryAt   time.Time // after a failed connection, when to try again
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
	p, err := r.plan(e, in)
	if err != nil {
		r.log.Error("automatic response not planned", zap.String("fingerprint", e.Fingerprint), zap.Error(err))
		r.responses.WithLabelValues(e.Rule, response.OutcomeFailed).Inc()
		return
	}
	origin := response.Origin{By: response.ByAutomatic, Actor: "pgtripwire", Time: r.now()}
	var res *response.Result
	switch {
	case r.mode != config.ResponseOn:
		// shadow: Record(p, nil) says what would have been done.
	case len(p.Steps) > 0:
		res = r.apply(ctx, p)
	default:
		res = response.Refusals(p) // nothing to run (the session is gone, or refused)
	}
	alerts := response.Record(p, res, origin)
	outcome := alerts[0].Labels[response.LabelOutcome]
	r.responses.WithLabelValues(e.Rule, outcome).Inc()
	r.log.Warn("automatic response", zap.String("rule", e.Rule), zap.String("fingerprint", e.Fingerprint),
		zap.String("role", p.Role), zap.String("outcome", outcome))
	r.record(ctx, alerts)
}

// clockSkew is how far the server's clock (backend_start) may be ahead of the
// detector's (the event's time) without a session being taken for a later one.
const clockSkew = 2 * time.Second

// plan is the termination of the triggering session alone, or a refusal saying why
// there is none: the event names no session, its statement was not classified as
// returning sensitive columns (a human decides: a canary visit by a statement the
// detector could not read may be a count), or the pid now belongs to a session that
// started after the read.
func (r *autoResponder) plan(e *evidence.Evidence, in evidence.Input) (*response.Plan, error) {
	refuse := func(target, reason string) (*response.Plan, error) {
		p := &response.Plan{Fingerprint: e.Fingerprint, Rule: e.Rule, Role: e.Labels[model.LabelRole],
			Database: e.Labels[model.LabelDatabase], Actions: []response.Action{response.Terminate}}
		if in.Trigger != nil && p.Role == "" {
			p.Role = in.Trigger.Role
		}
		p.Refused = []response.Refusal{{Action: response.Terminate, Target: target, Reason: reason}}
		return p, nil
	}
	ev := in.Trigger
	switch {
	case r.instance != "" && e.Labels[model.LabelInstance] != "" &&
		(e.Labels[model.LabelInstance] != r.instance || e.Labels[model.LabelCluster] != r.cluster):
		return refuse("the triggering session", fmt.Sprintf("the read ran on %s, and response.dsn connects to %s: "+
			"a pid is one server's; a human decides, with pgtripwire respond and that server's response.dsn",
			source.Target{Cluster: e.Labels[model.LabelCluster], Instance: e.Labels[model.LabelInstance]}.Server(),
			source.Target{Cluster: r.cluster, Instance: r.instance}.Server()))
	case ev == nil || ev.PID == 0:
		return refuse("the triggering session", "the event names no session (it fired on the clock): a human decides, with pgtripwire respond")
	case !ev.Complete || len(ev.SensitiveRead) == 0:
		return refuse(fmt.Sprintf("session pid %d", ev.PID), "the statement could not be classified as returning sensitive columns: "+
			"the automatic response acts only on a read it is sure of; a human decides, with pgtripwire respond")
	}
	only := *e
	only.Sessions = nil
	for _, s := range e.Sessions {
		if s.PID == ev.PID && !s.BackendStart.After(ev.Time.Add(clockSkew)) {
			only.Sessions = append(only.Sessions, s)
		}
	}
	if len(only.Sessions) == 0 {
		return refuse(fmt.Sprintf("session pid %d", ev.PID), "the session is gone (or its pid is another, later session's)")
	}
	return response.NewPlan(&only, []response.Action{response.Terminate}, r.guard)
}

// unreachableBackoff is how long after a failed connection the responder records its
// responses as failed without trying again: a responder that cannot connect must not
// hold every capture behind a connect timeout.
const unreachableBackoff = 30 * time.Second

// apply runs p on the responder's connection, opening it when needed; an idle one is
// pinged first (it may have died since the last response).
func (r *autoResponder) apply(ctx context.Context, p *response.Plan) *response.Result {
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if r.conn != nil {
		pctx, pcancel := context.WithTimeout(actx, 2*time.Second)
		if err := r.conn.Ping(pctx); err != nil {
			_ = r.conn.Close(pctx)
			r.conn = nil
		}
		pcancel()
	}
	if r.conn == nil {
		if r.now().Before(r.retryAt) {
			return response.NotApplied(p, errUnreachable)
		}
		conn, err := r.connect(actx)
		if err != nil {
			r.retryAt = r.now().Add(unreachableBackoff)
			r.log.Error("responder connection not opened (response.dsn)", zap.Error(err))
			return response.NotApplied(p, errUnreachable)
		}
		r.conn = conn
	}
	res := response.Apply(actx, r.conn, p)
	if r.conn.IsClosed() {
		r.conn = nil
	}
	return res
}

// errUnreachable is what a response line says of a responder that cannot connect: the
// line goes to Alertmanager and webhooks, the host and user only to the log.
var errUnreachable = errors.New("the responder's connection (response.dsn) could not be opened: the detector's log says why")

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
