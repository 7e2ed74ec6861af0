// Package notify takes the alert transitions the rules produce to every place an
// on-call engineer looks: the JSON alert log (and stdout), Alertmanager's v2 API (every
// configured URL, firing alerts re-sent until resolved) and signed webhooks. Each of
// them is a Sink, and stages compose them as Alertmanager's notify package composes its
// integrations (Stage, StageFunc, MultiStage, Fanout). New builds the one stage the
// detector hands its transitions to:
//
//	Fanout{
//		queue("alert_log", alert log),
//		asyncQueue("alert_spool", MultiStage{Alertmanager's active set, spool}), // with a remote sink only
//	}
//
// Nothing is lost on the way. A queue keeps in memory what the stage behind it refuses
// (a full disk), retries it every second and reports its health meanwhile, so the
// caller never evaluates twice; WaitWritten says when everything is on disk. The remote
// sinks' queue hands over from its own goroutine, so that their bookkeeping never
// delays the alert log (a transition is in the alert log before it is in the spool). The alert
// log writes and fsyncs each line before it returns. The spool persists a transition
// before any delivery attempt; one worker per remote sink (each Alertmanager URL, each
// webhook) then sends it that sink's transitions in order (a resolved never overtakes
// its firing), retrying with capped backoff until acknowledged: at least once. The
// spool is bounded, and what it drops past the bound is counted and logged.
//
// It is not where alerts are decided (package rules), and it does not group, silence
// or route them: that is Alertmanager's job, behind it.
package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"path/filepath"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/model"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Health components of the queues: a detector that cannot record or deliver its alerts
// is not ready, whatever its sources say.
const (
	alertLogComponent   = "alert_log"
	alertSpoolComponent = "alert_spool"
)

// Config says where transitions go. The detector builds it from the configuration
// file, with secrets already read from their files.
type Config struct {
	// AlertLog is the alert log's path (created with its directory when missing).
	AlertLog string
	// Stdout, when not nil, gets every alert line too, best effort.
	Stdout io.Writer
	// StateDir holds the spool (StateDir/spool) and Alertmanager's active alerts.
	StateDir string
	// SpoolMax bounds the undelivered transitions kept; the oldest is dropped past it.
	SpoolMax int
	// Alertmanager is nil when no Alertmanager is configured.
	Alertmanager *AlertmanagerConfig
	Webhooks     []WebhookConfig
	// ResolveAfter is how long an alert found firing in the state directory at start,
	// which no rule remembers, is kept firing in Alertmanager unless a rule fires it
	// again (the rules' own alerts.resolve_after). Zero means 5 m.
	ResolveAfter time.Duration
	// RetryInitial and RetryMax bound the per-sink retry backoff; zero means 1 s and 1 m.
	RetryInitial, RetryMax time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// AlertmanagerConfig describes the Alertmanager v2 API endpoints.
type AlertmanagerConfig struct {
	URLs              []string
	ResendInterval    time.Duration
	ResolvedResendFor time.Duration
	Timeout           time.Duration
	// GeneratorURL is a text/template over model.Alert; "" sends none.
	GeneratorURL string
	// Username and Password set basic auth; BearerToken an Authorization header.
	Username, Password, BearerToken string
	TLS                             *tls.Config
	// ResolveHold is the least time an alert stays firing at an Alertmanager after its
	// firing was delivered there, so that a fire-and-resolve seen late still notifies
	// (see defaultResolveHold). Zero means 1 m; tests shorten it.
	ResolveHold time.Duration
}

// WebhookConfig describes one webhook receiver.
type WebhookConfig struct {
	Name    string
	URL     string
	Secret  []byte
	Timeout time.Duration
	TLS     *tls.Config
}

func (cfg Config) withDefaults() Config {
	if cfg.RetryInitial <= 0 {
		cfg.RetryInitial = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SpoolMax <= 0 {
		cfg.SpoolMax = 10_000
	}
	if cfg.ResolveAfter <= 0 {
		cfg.ResolveAfter = 5 * time.Minute
	}
	return cfg
}

// Notifier is every configured sink composed into one Stage (see the package
// documentation). It is safe for concurrent use, though the order in which concurrent
// callers' transitions reach a sink is theirs to keep.
type Notifier struct {
	stage    Stage
	queues   []*queue
	alertLog *AlertLog
	spool    *spool             // nil without Alertmanager or webhook
	am       *alertmanagerGroup // nil without Alertmanager
}

// New opens the alert log and, when an Alertmanager or a webhook is configured, the
// spool (resuming what a previous run left undelivered), and composes them. The queues
// report to h as "alert_log" and "alert_spool".
func New(cfg Config, h *health.Status, log *zap.Logger, reg prometheus.Registerer) (*Notifier, error) {
	cfg = cfg.withDefaults()
	log = log.Named("notify")
	alertLog, err := openAlertLog(cfg.AlertLog, cfg.Stdout, reg)
	if err != nil {
		return nil, err
	}
	n := &Notifier{alertLog: alertLog}
	logQueue := newQueue(alertLogComponent, alertLog, h, log)
	logQueue.whole = true // a batch's lines are written and synced together, or none
	n.queues = append(n.queues, logQueue)
	remote, err := n.openRemote(cfg, log, reg)
	if err != nil {
		_ = alertLog.Close()
		return nil, err
	}
	if remote != nil {
		n.queues = append(n.queues, newAsyncQueue(alertSpoolComponent, remote, h, log))
	}
	fan := make(Fanout, 0, len(n.queues))
	for _, q := range n.queues {
		fan = append(fan, q)
	}
	n.stage = fan
	return n, nil
}

// openRemote builds the remote sinks and the stage in front of them; nil, nil when
// none is configured.
func (n *Notifier) openRemote(cfg Config, log *zap.Logger, reg prometheus.Registerer) (Stage, error) {
	var sinks []Sink
	if am := cfg.Alertmanager; am != nil {
		group, err := newAlertmanagerGroup(*am, cfg.ResolveAfter, filepath.Join(cfg.StateDir, "alertmanager-active.json"), cfg.Now, log)
		if err != nil {
			return nil, err
		}
		n.am = group
		for _, s := range group.sinks {
			sinks = append(sinks, s)
		}
	}
	for _, w := range cfg.Webhooks {
		sinks = append(sinks, newWebhook(w))
	}
	if len(sinks) == 0 {
		return nil, nil
	}
	sp, err := openSpool(cfg, sinks, reg, log)
	if err != nil {
		if n.am != nil {
			_ = n.am.close()
		}
		return nil, err
	}
	n.spool = sp
	if n.am == nil {
		return sp, nil
	}
	// Alertmanager's active set records each transition before it is spooled: what it
	// re-sends, and the start time the spooled transition keeps.
	return MultiStage{StageFunc(n.am.stamp), sp}, nil
}

// Exec hands transitions to every sink. It returns once the alert log has them on disk
// and the spool holds them, or, when either refuses (a full disk), once they are queued
// in memory for it; WaitWritten tells when those are written. The error is nil: what
// is refused waits in the queues, which report it to the detector's health.
func (n *Notifier) Exec(ctx context.Context, ts ...Transition) ([]Transition, error) {
	return n.stage.Exec(ctx, ts...)
}

// WaitWritten returns once every transition given to Exec so far is in the alert log and
// the spool (at once when nothing waits), or with ctx's error.
func (n *Notifier) WaitWritten(ctx context.Context) error {
	for _, q := range n.queues {
		if err := q.WaitWritten(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Run retries what the queues hold, delivers the spool and re-sends to Alertmanager
// until ctx is done; the queues make a last attempt then. It returns ctx's error.
func (n *Notifier) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, q := range n.queues {
		g.Go(func() error { return q.Run(ctx) })
	}
	if n.spool != nil {
		g.Go(func() error { return n.spool.Run(ctx) })
	}
	if n.am != nil {
		g.Go(func() error { return n.am.resendLoop(ctx, n.spool.metrics, n.spool.retryNow) })
	}
	return g.Wait()
}

// AlertLog is the alert log, for the metrics the detector sets up at start.
func (n *Notifier) AlertLog() *AlertLog { return n.alertLog }

// Close closes the alert log once stdout has taken its lines, the Alertmanager active
// set's journal and the spool's; call it after Run.
func (n *Notifier) Close() error {
	err := n.alertLog.Close()
	if n.am != nil {
		err = errors.Join(err, n.am.close())
	}
	if n.spool != nil {
		err = errors.Join(err, n.spool.close())
	}
	return err
}

// Firing tells the notifier which alerts the rules hold firing after a restart (the
// restored rule state): Alertmanager keeps hearing about them until a rule resolves
// them, even when the delivery state that listed them was lost.
func (n *Notifier) Firing(alerts []model.Alert) error {
	if n.am == nil {
		return nil
	}
	return n.am.adopt(alerts)
}

// Release stops re-sending to Alertmanager the alerts of cluster, without resolving
// them: another detector watches the cluster now (high availability), holds its
// firing alerts, and re-sends and resolves them itself.
func (n *Notifier) Release(cluster string) error {
	if n.am == nil {
		return nil
	}
	return n.am.release(cluster)
}

// Lost returns the events that say what delivery state could not be restored at start:
// the Alertmanager active set damaged beyond its previous generation (Alertmanager then
// drops what it held after four re-send intervals), spooled transitions unreadable
// (some sink may never get them). None when everything was restored.
func (n *Notifier) Lost(now time.Time) []model.Event {
	var out []model.Event
	lost := func(object, operation string, count int) {
		out = append(out, model.Event{Time: now, Source: model.SourceDetector, Kind: model.KindStateLost,
			Object: object, Operation: operation, Rows: int64(count), Calls: 1, Complete: true})
	}
	if n.am != nil && n.am.lost != nil {
		lost(filepath.Base(n.am.path), "Alertmanager active set", 1)
	}
	if n.spool != nil && n.spool.unreadable > 0 {
		lost(filepath.Base(n.spool.dir), "undelivered alert transitions", n.spool.unreadable)
	}
	return out
}
