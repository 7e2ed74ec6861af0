// Package notify delivers alert transitions to the places on-call engineers look:
// Alertmanager (v2 API, every configured URL, firing alerts re-sent until resolved) and
// signed webhooks. Delivery is at-least-once: a transition is written to a durable spool
// in the state directory before any attempt, retried per sink with capped backoff, and
// removed only when every sink has acknowledged it; the spool is bounded, and what it
// drops past the bound is counted and logged.
//
// It is not the alert log (package alert) and it decides nothing: it delivers the
// transitions the rules produced.
package notify

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/pgtripwire/pgtripwire/detector/backoff"
	"github.com/pgtripwire/pgtripwire/model"
)

// Config says where transitions go. The detector builds it from the configuration
// file, with secrets already read from their files.
type Config struct {
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

// sink is one destination that acknowledges transitions one at a time.
type sink interface {
	name() string
	deliver(ctx context.Context, e Entry) error
}

// Notifier spools transitions and runs one delivery worker per sink.
type Notifier struct {
	cfg     Config
	log     *zap.Logger
	metrics *metrics
	spool   *spool
	sinks   []sink
	names   []string
	am      *alertmanagerGroup       // nil without Alertmanager
	wake    map[string]chan struct{} // a transition was spooled
	// recovered: the sink answered a re-send; retry now instead of after the backoff.
	recovered map[string]chan struct{}
	gaugeMu   sync.Mutex
}

// New opens the spool (resuming what a previous run left undelivered) and prepares the
// sinks. With no sink configured it returns nil, nil: there is nothing to deliver to.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Notifier, error) {
	if cfg.Alertmanager == nil && len(cfg.Webhooks) == 0 {
		return nil, nil
	}
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
	n := &Notifier{cfg: cfg, log: log.Named("notify"), wake: make(map[string]chan struct{}),
		recovered: make(map[string]chan struct{})}
	if am := cfg.Alertmanager; am != nil {
		group, err := newAlertmanagerGroup(*am, cfg.ResolveAfter, filepath.Join(cfg.StateDir, "alertmanager-active.json"), cfg.Now, n.log)
		if err != nil {
			return nil, err
		}
		n.am = group
		for _, s := range group.sinks {
			n.sinks = append(n.sinks, s)
		}
	}
	for _, w := range cfg.Webhooks {
		n.sinks = append(n.sinks, newWebhook(w))
	}
	for _, s := range n.sinks {
		n.names = append(n.names, s.name())
		n.wake[s.name()] = make(chan struct{}, 1)
		n.recovered[s.name()] = make(chan struct{}, 1)
	}
	n.metrics = newMetrics(reg, n.names)
	lost := func(sinks []string) {
		for _, s := range sinks {
			n.metrics.dropped.WithLabelValues(s).Inc()
		}
	}
	sp, err := openSpool(filepath.Join(cfg.StateDir, "spool"), cfg.SpoolMax, n.names, n.log, n.onDrop, lost)
	if err != nil {
		return nil, err
	}
	n.spool = sp
	if left := sp.len(); left > 0 {
		n.log.Info("resuming delivery of alert transitions left in the spool", zap.Int("transitions", left))
	}
	n.updateQueued()
	return n, nil
}

// onDrop is called by the spool, with its lock held, for an entry dropped at the bound.
func (n *Notifier) onDrop(e *Entry) {
	for _, s := range e.Pending {
		n.metrics.dropped.WithLabelValues(s).Inc()
	}
	n.log.Error("alert spool full: oldest undelivered transition dropped",
		zap.String("rule", e.Alert.Rule), zap.String("fingerprint", e.Alert.Fingerprint),
		zap.String("state", string(e.Alert.State)), zap.Strings("undelivered_to", e.Pending),
		zap.Int("spool_max", n.cfg.SpoolMax))
}

// Write spools a transition for every sink and wakes their workers. When it returns
// nil the transition survives a crash; an error means it was not spooled.
func (n *Notifier) Write(a model.Alert) error {
	startsAt := a.Time
	if n.am != nil {
		var err error
		if startsAt, err = n.am.track(a); err != nil {
			return err
		}
	}
	if _, err := n.spool.enqueue(a, startsAt, n.names, n.cfg.Now()); err != nil {
		return err
	}
	n.updateQueued()
	for _, ch := range n.wake {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return nil
}

// Run delivers until ctx is done: one worker per sink, and Alertmanager's re-send loop.
func (n *Notifier) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range n.sinks {
		g.Go(func() error { return n.work(ctx, s) })
	}
	if n.am != nil {
		g.Go(func() error {
			return n.am.resendLoop(ctx, n.metrics, func(sink string) {
				select {
				case n.recovered[sink] <- struct{}{}:
				default:
				}
			})
		})
	}
	return g.Wait()
}

// work delivers the sink's pending transitions in order, retrying the oldest with
// backoff until it is acknowledged: order matters (a resolved must not overtake its
// firing), so a failing head blocks the sink's queue, not the other sinks.
func (n *Notifier) work(ctx context.Context, s sink) error {
	bo := backoff.New(n.cfg.RetryInitial, n.cfg.RetryMax)
	failing := false
	for {
		e, ok := n.spool.next(s.name())
		if !ok {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-n.wake[s.name()]:
				continue
			}
		}
		start := time.Now()
		err := s.deliver(ctx, e)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rejected := err != nil && permanent(err)
		if rejected {
			// The receiver understood and refused this transition: retrying cannot
			// help, and holding it would block every later one. A lost page: counted
			// as dropped, logged as an error.
			n.metrics.failed.WithLabelValues(s.name()).Inc()
			n.metrics.dropped.WithLabelValues(s.name()).Inc()
			n.log.Error("alert transition rejected by the sink; dropped", zap.String("sink", s.name()),
				zap.String("rule", e.Alert.Rule), zap.String("fingerprint", e.Alert.Fingerprint), zap.Error(err))
		} else if err != nil {
			n.metrics.failed.WithLabelValues(s.name()).Inc()
			if !failing {
				n.log.Warn("alert delivery failed; retrying with backoff", zap.String("sink", s.name()),
					zap.String("rule", e.Alert.Rule), zap.String("fingerprint", e.Alert.Fingerprint), zap.Error(err))
			}
			failing = true
			t := time.NewTimer(bo.Next())
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			case <-n.recovered[s.name()]:
				t.Stop()
			}
			continue
		}
		if failing {
			n.log.Info("alert delivery recovered", zap.String("sink", s.name()))
		}
		failing = false
		bo.Reset()
		if err := n.spool.ack(e.Seq, s.name()); err != nil {
			// The sink has it; at worst it is delivered again after a restart.
			n.log.Error("alert delivered but not removed from the spool", zap.String("sink", s.name()), zap.Error(err))
		}
		if !rejected {
			n.metrics.sent.WithLabelValues(s.name()).Inc()
			n.metrics.requestSeconds.WithLabelValues(s.name()).Observe(time.Since(start).Seconds())
			n.metrics.latency.WithLabelValues(s.name()).Observe(n.cfg.Now().Sub(e.Enqueued).Seconds())
		}
		n.updateQueued()
	}
}

// updateQueued refreshes the queue gauges. Callers race (the pipeline's Write, each
// worker), so the gauges are set under one lock from one consistent view.
func (n *Notifier) updateQueued() {
	n.gaugeMu.Lock()
	defer n.gaugeMu.Unlock()
	pending, total := n.spool.counts()
	for _, s := range n.names {
		n.metrics.queued.WithLabelValues(s).Set(float64(pending[s]))
	}
	n.metrics.spoolEntries.Set(float64(total))
}
