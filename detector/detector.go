// Package detector runs pgtripwire: it builds the sources of the configuration from the
// registry, connects them to the rule evaluator and the evaluator to the notify stages
// (the alert log, Alertmanager, webhooks), serves /metrics, /healthz and /readyz, and
// stops cleanly when its context ends. Run embeds the whole daemon in a process, so tests
// start it in-process exactly as `pgtripwire run` does.
//
// It is not where sources, rules or sinks are implemented: sources live under
// detector/source, sinks in detector/notify, rules under rules/.
package detector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/pgtripwire/pgtripwire/detector/buildinfo"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/notify"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/web"
	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/engine"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// Event is the one value that flows from sources to rules.
type Event = model.Event

// Deps are what the embedding process provides.
type Deps struct {
	// Logger receives the detector's logs; nil means no logs.
	Logger *zap.Logger
	// Registry receives the detector's metrics and is what /metrics serves; nil means a
	// fresh registry.
	Registry *prometheus.Registry
	// Stdout receives every alert line too when alerts.stdout is set; nil means os.Stdout.
	Stdout io.Writer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Detector is a configured, not yet running daemon. New binds the HTTP listener and
// opens the alert log, so that configuration problems surface before Run.
type Detector struct {
	cfg      *config.Config
	log      *zap.Logger
	registry *prometheus.Registry
	listener net.Listener
	notifier *notify.Notifier // every sink: the alert log, Alertmanager, webhooks
	health   *health.Status
	pipeline *pipeline
	engine   *engine.Engine
	metrics  detectorMetrics
	now      func() time.Time
	sources  []source.Runner
	// servers are the servers the detector watches; shared their statistics
	// readers, closed when the sources have stopped.
	servers []*server
	shared  []*source.Server
	// capturer captures the evidence of firing alerts; nil when evidence.enabled is
	// false.
	capturer *evidence.Capturer
	evidence *evidence.Store // the capturer's, served at EvidencePath
	// responder is the automatic response of precise rules; nil when
	// response.automatic is off (or evidence.enabled is false, which the
	// configuration refuses with it on).
	responder *autoResponder
	// ha, with high_availability on, runs the sources of each target while its
	// lease is held (sources is empty then); nil otherwise.
	ha *haState
}

// ConfigError marks an error caused by the configuration rather than by the runtime
// environment; the CLI exits 2 for it.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// New prepares a detector from a validated configuration.
func New(cfg *config.Config, deps Deps) (*Detector, error) {
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	if deps.Stdout == nil {
		deps.Stdout = os.Stdout
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	connConfig, err := pgx.ParseConfig(cfg.Database.DSN)
	if err != nil {
		// pgx masks passwords in its message only on a best-effort basis: say nothing of
		// the DSN itself. The config package reports the same problem with its position.
		return nil, &ConfigError{Err: errors.New("database.dsn (or PGTRIPWIRE_DSN / PG* variables) is not a valid connection string")}
	}
	if connConfig.ConnectTimeout == 0 {
		// Without it a connection attempt to an unreachable host hangs for the kernel's
		// TCP timeout (minutes), during which the detector cannot say it is blind.
		connConfig.ConnectTimeout = 10 * time.Second
	}
	connConfig.RuntimeParams["application_name"] = "pgtripwire"

	d := &Detector{cfg: cfg, log: deps.Logger, registry: deps.Registry, health: health.New(deps.Registry), now: deps.Now}
	buildinfo.Register(deps.Registry)

	groups, err := LoadRules(cfg)
	if err != nil {
		return nil, err
	}
	d.metrics = newDetectorMetrics(deps.Registry)

	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}

	if err := checkHighAvailability(cfg); err != nil {
		return nil, err
	}
	statePath := filepath.Join(cfg.StateDir, ruleStateFile)
	if cfg.HighAvailability.Enabled {
		// The state of each target lives in PostgreSQL, taken with its lease.
		statePath = ""
	}
	var legacy map[string]string
	if !cfg.Fleet() {
		// A state file of before the server fields is the minimal configuration's:
		// its groups are its primary's.
		legacy = map[string]string{model.LabelInstance: cfg.Watches()[0].Primary.Instance}
	}
	d.engine, err = engine.New(groups, engine.Options{
		StatePath:    statePath,
		LegacyServer: legacy,
		ResolveAfter: cfg.Alerts.ResolveAfter,
		OnSave:       func(err error) { d.health.Set(ruleStateComponent, err) },
		// Eval runs under the pipeline's lock, which guards its links.
		Again:      func(a model.Alert, ev *model.Event) { d.pipeline.links.again(a, ev) },
		Logger:     deps.Logger.Named("rules"),
		Registerer: deps.Registry,
	})
	if err != nil {
		return nil, fmt.Errorf("start the rule engine: %w", err)
	}
	d.health.Set(ruleStateComponent, nil)
	if !cfg.HighAvailability.Enabled {
		// With high availability the state taken with a lease is the truth: this
		// detector's alert log may hold alerts another detector resolved since.
		if err := reconcileAlertLog(cfg.Alerts.File, d.engine, deps.Now(), deps.Logger.Named("rules")); err != nil {
			return nil, err
		}
	}
	var eval Evaluator = d.engine
	if len(eval.Rules()) == 0 {
		deps.Logger.Warn("no rule pages: events are observed but nothing can alert (rules.default_pack is off, or every rule is disabled or in shadow mode)")
	}
	if d.notifier, d.pipeline, err = newAlerting(cfg, deps, d.health, eval, d.engine.Firing()); err != nil {
		return nil, err
	}
	if err := web.ValidateConfigFile(cfg.HTTP.WebConfigFile); err != nil {
		_ = d.notifier.Close()
		return nil, &ConfigError{Err: fmt.Errorf("http.web_config_file: %w", err)}
	}
	d.listener, err = net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		_ = d.notifier.Close()
		return nil, fmt.Errorf("listen on http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	if cfg.Evidence.Enabled {
		if err := d.startEvidence(groups, connConfig); err != nil {
			_ = d.listener.Close()
			_ = d.notifier.Close()
			return nil, err
		}
	}
	if err := d.notifier.Firing(d.pipeline.links.annotate(d.engine.Firing())); err != nil {
		_ = d.listener.Close()
		_ = d.notifier.Close()
		return nil, fmt.Errorf("restore the alerts firing in Alertmanager: %w", err)
	}
	d.pipeline.applicationRoles = make(map[string]bool, len(cfg.Roles.Application))
	for _, r := range cfg.Roles.Application {
		d.pipeline.applicationRoles[r] = true
	}

	declared, err := declarations(cfg)
	if err != nil {
		_ = d.listener.Close()
		_ = d.notifier.Close()
		return nil, err
	}
	servers, err := estate(context.Background(), cfg, connConfig)
	if err != nil {
		_ = d.listener.Close()
		_ = d.notifier.Close()
		return nil, err
	}
	d.servers = servers
	if d.responder != nil {
		// response.dsn's server, else the first cluster's primary.
		var ok bool
		if d.responder.cluster, d.responder.instance, ok = cfg.ServerOf(cfg.Response.DSN); !ok {
			d.responder.cluster, d.responder.instance = servers[0].cluster, servers[0].instance
		}
	}
	env := source.Env{
		SearchPath:     cfg.Database.SearchPath,
		CatalogRefresh: cfg.Database.CatalogRefresh,
		StateDir:       cfg.StateDir,
		Sink:           d.pipeline,
		Logger:         deps.Logger,
		Declared:       declared,
		Now:            deps.Now,
	}
	var skipped []string
	if cfg.HighAvailability.Enabled {
		err = d.newHA(servers, env)
	} else {
		d.sources, d.shared, skipped, err = buildEstate(cfg.Sources, env, servers, deps.Registry, d.health, servers[0].cluster == "")
	}
	if err != nil {
		_ = d.listener.Close()
		_ = d.notifier.Close()
		return nil, err
	}
	if len(skipped) > 0 {
		deps.Logger.Warn("sources not run on the servers watched with several databases: each database would need a replication slot of its own",
			zap.Strings("sources", skipped))
	}
	return d, nil
}

// startEvidence prepares the capture of every firing alert's evidence and the
// evidence_url annotation that links to it.
func (d *Detector) startEvidence(groups []rulefmt.Group, connConfig *pgx.ConnConfig) error {
	base, err := externalURL(d.cfg, d.listener.Addr())
	if err != nil {
		return err
	}
	urgent := respondingRules(d.cfg, groups)
	d.evidence = EvidenceStore(d.cfg)
	opts := evidence.Options{
		Connect:    d.evidenceConnect(connConfig),
		Where:      where,
		Store:      d.evidence,
		Now:        d.now,
		Logger:     d.log,
		Registerer: d.registry,
	}
	if d.cfg.Response.Automatic != config.ResponseOff {
		responderConn, err := responderConfig(d.cfg)
		if err != nil {
			return err
		}
		d.responder = newAutoResponder(d.cfg, connectFunc(responderConn, "pgtripwire responder"), connConfig.User,
			d.pipeline.record, d.now, d.log, d.registry)
		opts.After = d.responder.respond
	}
	d.capturer = evidence.NewCapturer(opts)
	d.pipeline.links = &evidenceLinks{capturer: d.capturer, base: base, urgent: urgent, info: newEvidenceInfo(d.registry)}
	return nil
}

// Gatherer is what /metrics serves: Deps.Registry, and with high_availability the
// registries of the sources of the targets the detector watches now (each takeover
// builds them afresh).
func (d *Detector) Gatherer() prometheus.Gatherer {
	if d.ha != nil {
		return d.ha.gatherer
	}
	return d.registry
}

// Addr is the address the HTTP endpoints listen on (useful with port 0).
func (d *Detector) Addr() net.Addr { return d.listener.Addr() }

// Run runs every part until ctx is done or one fails. A cancelled ctx is a clean stop
// and returns nil; any other error is a runtime failure. Run closes the alert log.
func (d *Detector) Run(ctx context.Context) error {
	defer func() {
		if err := d.notifier.Close(); err != nil {
			d.log.Error("close alert log", zap.Error(err))
		}
	}()
	d.log.Info("pgtripwire running",
		zap.String("version", buildinfo.VersionString()),
		zap.Strings("servers", d.serverNames()),
		zap.Int("databases", d.databases()),
		zap.String("http", d.listener.Addr().String()),
		zap.String("alert_log", d.cfg.Alerts.File))

	// Before any source: what the state lost is said.
	var lost []model.Event
	if err := d.engine.Lost(); err != nil {
		lost = append(lost, model.Event{Time: d.now(), Source: model.SourceDetector, Kind: model.KindStateLost,
			Object: ruleStateFile, Operation: "rule state", Rows: 1, Calls: 1, Complete: true})
	}
	lost = append(lost, d.notifier.Lost(d.now())...)
	if len(lost) > 0 {
		_ = d.pipeline.HandleEvents(ctx, lost)
	}

	g, ctx := errgroup.WithContext(ctx)
	if d.ha != nil {
		d.runHA(ctx, g)
	}
	mux := web.Handler(d.Gatherer(), d.health.Ready)
	if d.capturer != nil {
		mux.Handle("GET "+EvidencePath+"{fingerprint}", evidence.Handler(d.evidence))
		g.Go(func() error { return d.capturer.Run(ctx) })
	}
	g.Go(func() error {
		return web.Serve(ctx, d.listener, mux, web.Options{
			WebConfigFile: d.cfg.HTTP.WebConfigFile,
			Logger:        d.log,
		})
	})
	g.Go(func() error { return d.pipeline.Run(ctx) })
	if len(d.cfg.Rules.Files) > 0 {
		g.Go(func() error { return d.watchRuleFiles(ctx) })
	}
	g.Go(func() error { return d.notifier.Run(ctx) })
	for _, s := range d.sources {
		g.Go(func() error { return s.Run(ctx) })
	}
	err := g.Wait()
	for _, s := range d.shared {
		s.Close()
	}
	if d.responder != nil {
		d.responder.close(ctx)
	}
	// The pipeline has stopped: save the rules' state (firing alerts, baselines,
	// first-seen sets) so that a restart neither re-fires nor forgets.
	if cerr := d.engine.Close(d.now()); cerr != nil {
		d.log.Error("save rule state", zap.Error(cerr))
	}
	if errors.Is(err, context.Canceled) {
		d.log.Info("pgtripwire stopped")
		return nil
	}
	return err
}

// serverNames names the watched servers as alerts do: cluster/instance, or the
// instance alone without a cluster. Never a DSN.
func (d *Detector) serverNames() []string {
	names := make([]string, len(d.servers))
	for i, s := range d.servers {
		names[i] = source.Target{Cluster: s.cluster, Instance: s.instance}.Server()
	}
	return names
}

// databases counts the watched databases, on every server.
func (d *Detector) databases() int {
	n := 0
	for _, s := range d.servers {
		n += len(s.databases)
	}
	return n
}

// Run is New followed by Run.
func Run(ctx context.Context, cfg *config.Config, deps Deps) error {
	d, err := New(cfg, deps)
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

func sensitiveMap(tables []config.SensitiveTable) map[string][]string {
	m := make(map[string][]string, len(tables))
	for _, t := range tables {
		m[t.Table] = append(m[t.Table], t.Columns...)
	}
	return m
}

// declarations turns what the configuration declares about the estate into the
// sources' terms. A loaded configuration has checked every value; one built in code
// may not have.
func declarations(cfg *config.Config) (source.Declarations, error) {
	d := source.Declarations{ApplicationRoles: cfg.Roles.Application}
	for i, a := range cfg.Replication.Allowed {
		c := source.ReplicationClient{Role: a.Role, Application: a.Application, Local: a.ClientCIDR == "local"}
		if a.ClientCIDR != "" && !c.Local {
			p, err := netip.ParsePrefix(a.ClientCIDR)
			if err != nil {
				return d, &ConfigError{Err: fmt.Errorf("replication.allowed[%d].client_cidr: %w", i, err)}
			}
			c.Network = p
		}
		d.Replication = append(d.Replication, c)
	}
	return d, nil
}
