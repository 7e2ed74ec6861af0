package detector

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/ha"
	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/model"
)

// With high_availability on, the detector watches a target (a cluster of the
// configuration) only while it holds the target's lease (package ha). Each time it
// takes a target, it resumes the rule state the previous holder wrote, starts the
// target's sources afresh (as a restarted detector would: a new registry for their
// metrics, their state directory emptied), and writes the target's rule state
// through the lease every save interval and after every transition. When the lease
// is lost, the sources stop at once and the target's groups and firing alerts are
// forgotten here: they are the next holder's.

// haWatch is one target under high availability.
type haWatch struct {
	cluster string
	servers []*server
	lease   *ha.Lease
	// kick asks the target's state keeper to write the rule state now (a
	// transition of one of its alerts).
	kick chan struct{}
}

// haState is the detector's high availability: its watches, by cluster, and what
// their sources are built from.
type haState struct {
	watches   []*haWatch
	byCluster map[string]*haWatch
	env       source.Env
	metrics   *ha.Metrics
	gatherer  *gatherers
	// leases are shared by the watches' leases: the targets held spread the others
	// to other detectors.
	leases *ha.Detector
}

// spreadDelay is what a detector adds to its wait before trying a target's lease,
// per target it already holds (up to four): a detector that watches nothing takes a
// free target first.
const spreadDelay = 2 * time.Second

// newHA prepares a lease per target of the configuration. The sources are built
// once here, and thrown away, so that a configuration they refuse is refused at
// start rather than at the first takeover.
func (d *Detector) newHA(servers []*server, env source.Env) error {
	cfg := d.cfg.HighAvailability
	var stateConn *pgx.ConnConfig
	if cfg.StateDSN != "" {
		c, err := pgx.ParseConfig(cfg.StateDSN)
		if err != nil {
			return &ConfigError{Err: errors.New("high_availability.state_dsn is not a valid connection string")}
		}
		stateConn = c
	}
	probe := prometheus.NewRegistry()
	_, shared, _, err := buildEstate(d.cfg.Sources, env, servers, probe, health.New(probe), false)
	for _, s := range shared {
		s.Close()
	}
	if err != nil {
		return err
	}

	keys := map[int32]string{}
	for _, srv := range servers {
		k := ha.LockKey(srv.cluster)
		if other, ok := keys[k]; ok && other != srv.cluster {
			return &ConfigError{Err: fmt.Errorf("high_availability: targets %q and %q would share one lease (their names hash alike): rename one", other, srv.cluster)}
		}
		keys[k] = srv.cluster
	}
	h := &haState{byCluster: map[string]*haWatch{}, env: env, metrics: ha.NewMetrics(d.registry),
		gatherer: &gatherers{base: d.registry, more: map[string]prometheus.Gatherer{}}, leases: &ha.Detector{Spread: spreadDelay}}
	holder := d.holderName()
	for _, srv := range servers {
		w := h.byCluster[srv.cluster]
		if w == nil {
			w = &haWatch{cluster: srv.cluster, kick: make(chan struct{}, 1)}
			h.byCluster[srv.cluster] = w
			h.watches = append(h.watches, w)
		}
		w.servers = append(w.servers, srv)
		if srv.standby {
			continue
		}
		conn := stateConn
		if conn == nil {
			conn = srv.conn
		}
		conn = conn.Copy()
		if conn.ConnectTimeout == 0 {
			conn.ConnectTimeout = 10 * time.Second
		}
		conn.RuntimeParams["application_name"] = "pgtripwire lease"
		w.lease = &ha.Lease{
			Target:   srv.cluster,
			Conn:     conn,
			Holder:   holder,
			Detector: h.leases,
			Logger:   d.log.Named("lease"),
			Metrics:  h.metrics,
		}
	}
	d.ha = h
	// What this detector's delivery state holds of the targets from an earlier run
	// (a restart) is not its own until it takes the lease again: another detector may
	// hold those alerts, and re-sending or resolving them here would page twice.
	for _, w := range h.watches {
		if err := d.notifier.Release(w.cluster); err != nil {
			return fmt.Errorf("forget the Alertmanager alerts of target %q until its lease is held: %w", w.cluster, err)
		}
	}
	// A transition is written at once, so that a successor does not page it again.
	d.pipeline.onTransitions = func(alerts []model.Alert) {
		for _, a := range alerts {
			if w := h.byCluster[a.Labels[model.LabelCluster]]; w != nil {
				select {
				case w.kick <- struct{}{}:
				default:
				}
			}
		}
	}
	return nil
}

// holderName says who holds a lease, in the state rows: the host and the HTTP
// address, which tell the detectors apart.
func (d *Detector) holderName() string {
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(d.listener.Addr().String())
	return fmt.Sprintf("%s:%s (pid %d)", host, port, os.Getpid())
}

// runHA runs a lease per target in g until ctx is done.
func (d *Detector) runHA(ctx context.Context, g *errgroup.Group) {
	for _, w := range d.ha.watches {
		g.Go(func() error {
			return w.lease.Run(ctx, func(ctx context.Context, held *ha.Held) error {
				return d.watchTarget(ctx, w, held)
			})
		})
	}
}

// watchTarget watches w's target while its lease is held (until ctx ends).
func (d *Detector) watchTarget(ctx context.Context, w *haWatch, held *ha.Held) error {
	log := d.log.With(zap.String("cluster", w.cluster))
	place := d.health.At(health.Server{Cluster: w.cluster, Server: "lease"})

	if err := d.takeState(ctx, w, held, log); err != nil {
		log.Warn("lease given up: the target's state could not be read through it", zap.Error(err))
		return nil
	}
	// Whatever ends the watch, the target's groups and alerts are the next holder's;
	// when the lease is lost, at once: a Tick must not resolve (nor an event fire) what
	// the successor holds while the sources are still stopping.
	release := sync.OnceFunc(func() {
		d.engine.Release(w.cluster)
		if err := d.notifier.Release(w.cluster); err != nil {
			log.Error("the target's alerts stay in the Alertmanager active set", zap.Error(err))
		}
	})
	stopFencing := context.AfterFunc(ctx, func() {
		if errors.Is(context.Cause(ctx), ha.ErrLost) {
			release()
		}
	})
	defer func() {
		stopFencing()
		release()
		d.health.ForgetCluster(w.cluster)
	}()

	// The sources start afresh: what their state directory held (counters, a replay
	// guard) may be older than what the previous holder judged.
	dir := filepath.Join(d.cfg.StateDir, "servers", safeName(w.cluster))
	if err := os.RemoveAll(dir); err != nil {
		log.Warn("the sources' old state directory was not emptied", zap.String("path", dir), zap.Error(err))
	}
	reg := prometheus.NewRegistry()
	env := d.ha.env
	env.ReplayGuards = heldGuards{held: held, now: d.now}
	env.Sink = fencedSink{ctx: ctx, next: env.Sink}
	runners, shared, _, err := buildEstate(d.cfg.Sources, env, w.servers, reg, d.health, false)
	if err != nil {
		return err
	}
	d.ha.gatherer.add(w.cluster, reg)
	defer d.ha.gatherer.remove(w.cluster)

	g, gctx := errgroup.WithContext(ctx)
	for _, r := range runners {
		g.Go(func() error { return r.Run(gctx) })
	}
	g.Go(func() error { return d.keepState(gctx, w, held, place, log) })
	err = g.Wait()

	for _, s := range shared {
		s.Close()
	}
	if !errors.Is(context.Cause(ctx), ha.ErrLost) {
		// A clean stop: the successor resumes from exactly here.
		if serr := d.saveState(ctx, w, held, nil); serr != nil {
			log.Warn("rule state not written at the stop: the successor resumes from the last write", zap.Error(serr))
		}
	}
	if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// takeState resumes the rule state the target's previous holder wrote, and tells
// Alertmanager about its firing alerts. State that cannot be decoded is said with a
// DetectorStateLost alert, and the target starts without it; state the server
// refuses (the schema missing: setup not run) is logged and the target starts
// without it, unready until its state can be written. An error is returned only
// when the lease connection fails: the lease is then given up.
func (d *Detector) takeState(ctx context.Context, w *haWatch, held *ha.Held, log *zap.Logger) error {
	data, by, at, ok, err := held.LoadRuleState(ctx)
	var pgErr *pgconn.PgError
	switch {
	case err != nil && !errors.Is(err, ha.ErrDamaged) && (!errors.As(err, &pgErr) || !refused(pgErr)):
		// A failed connection, a timeout, a server in trouble: the state may be
		// there, and a first write without it would overwrite it.
		return err
	case err != nil && !errors.Is(err, ha.ErrDamaged):
		log.Error("rule state of the target not readable: watching it without it (run pgtripwire setup --apply)", zap.Error(err))
		return nil
	case err == nil && ok:
		_, err = d.engine.Take(data)
	}
	if err != nil {
		log.Error("rule state of the target lost: watching it without baselines, first-seen keys or firing alerts", zap.Error(err))
		d.engine.Release(w.cluster)
		_ = d.pipeline.HandleEvents(ctx, []model.Event{{Time: d.now(), Source: model.SourceDetector, Kind: model.KindStateLost,
			Cluster: w.cluster, Object: ha.RuleStateTable, Operation: "rule state", Rows: 1, Calls: 1, Complete: true}})
		return nil
	}
	if !ok {
		log.Info("no rule state saved for the target yet: watching it afresh")
		return nil
	}
	log.Info("rule state taken over", zap.String("saved_by", by), zap.Time("saved_at", at))
	var firing []model.Alert
	for _, a := range d.engine.Firing() {
		if a.Labels[model.LabelCluster] == w.cluster {
			firing = append(firing, a)
		}
	}
	if err := d.notifier.Firing(d.pipeline.links.annotate(firing)); err != nil {
		log.Error("the target's firing alerts were not added to the Alertmanager active set", zap.Error(err))
	}
	return nil
}

// refused reports whether the server refused the state's table for want of setup:
// it does not exist, or the role may not use it.
func refused(err *pgconn.PgError) bool {
	switch err.Code {
	case "42P01", "3F000", "42501": // undefined_table, invalid_schema_name, insufficient_privilege
		return true
	}
	return false
}

// keepState writes the target's rule state every save interval, and at once after a
// transition, until ctx is done.
func (d *Detector) keepState(ctx context.Context, w *haWatch, held *ha.Held, place *health.Scoped, log *zap.Logger) error {
	place.Register(ruleStateComponent)
	var last [sha256.Size]byte
	t := time.NewTicker(d.cfg.HighAvailability.SaveInterval)
	defer t.Stop()
	for {
		// At once, then every interval and after each transition.
		err := d.saveState(ctx, w, held, &last)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			log.Warn("rule state not written; retrying", zap.Error(err))
		}
		place.Set(ruleStateComponent, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-w.kick:
		}
	}
}

// saveState writes the target's rule state through the lease, unless it is the same
// as last written (last nil: always).
func (d *Detector) saveState(ctx context.Context, w *haWatch, held *ha.Held, last *[sha256.Size]byte) error {
	data, err := d.engine.Partition(w.cluster)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	if last != nil && sum == *last {
		return nil
	}
	if err := held.SaveRuleState(ctx, d.now(), data); err != nil {
		return err
	}
	if last != nil {
		*last = sum
	}
	return nil
}

// fencedSink refuses the events of a target's sources once its lease is lost: a
// source still finishing a poll, or one that reconnected to another server before the
// loss was noticed, hands nothing over that the next holder would hand over too. The
// WAL source does not confirm what was refused: the next holder receives it.
type fencedSink struct {
	ctx  context.Context
	next source.Sink
}

func (f fencedSink) HandleEvents(ctx context.Context, events []model.Event) error {
	if err := context.Cause(f.ctx); err != nil {
		return fmt.Errorf("events not handed over: %w", err)
	}
	return f.next.HandleEvents(ctx, events)
}

func (f fencedSink) WaitWritten(ctx context.Context) error {
	if w, ok := f.next.(source.WrittenWaiter); ok {
		return w.WaitWritten(ctx)
	}
	return nil
}

// heldGuards keeps the WAL source's replay guards in the pgtripwire schema, through
// the lease: the next holder of the target resumes from them.
type heldGuards struct {
	held *ha.Held
	now  func() time.Time
}

func (g heldGuards) LoadGuard(ctx context.Context, slot string) (source.ReplayGuard, bool, error) {
	r, ok, err := g.held.LoadReplayGuard(ctx, slot)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && refused(pgErr) {
		// No table (setup not run): there is no guard to lose. Saving it fails, and
		// says so, until setup makes it.
		return source.ReplayGuard{}, false, nil
	}
	return source.ReplayGuard(r), ok, err
}

func (g heldGuards) SaveGuard(ctx context.Context, slot string, r source.ReplayGuard) error {
	return g.held.SaveReplayGuard(ctx, g.now(), slot, ha.ReplayGuard(r))
}

// gatherers is what /metrics serves: the detector's registry and the registries of
// the targets' sources while they run (each takeover builds them afresh).
type gatherers struct {
	base prometheus.Gatherer
	mu   sync.Mutex
	more map[string]prometheus.Gatherer
}

func (g *gatherers) add(key string, r prometheus.Gatherer) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.more[key] = r
}

func (g *gatherers) remove(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.more, key)
}

// Gather merges every registry's families.
func (g *gatherers) Gather() ([]*dto.MetricFamily, error) {
	g.mu.Lock()
	all := prometheus.Gatherers{g.base}
	for _, k := range slices.Sorted(maps.Keys(g.more)) {
		all = append(all, g.more[k])
	}
	g.mu.Unlock()
	return all.Gather()
}

// checkHighAvailability refuses what high availability cannot do.
func checkHighAvailability(cfg *config.Config) error {
	if !cfg.HighAvailability.Enabled {
		return nil
	}
	if s, ok := cfg.Sources.Lookup("log"); ok && s.On() {
		return &ConfigError{Err: errors.New("high_availability: the log source reads one server's log files, " +
			"which a detector elsewhere cannot: set sources.log.enabled: false")}
	}
	return nil
}
