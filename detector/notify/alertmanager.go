package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/model"
)

// defaultResolveHold is the least time an alert stays firing in an Alertmanager after
// its firing reached it. A detection that fired and resolved while Alertmanager was
// down arrives as a firing and a resolution milliseconds apart; resolved at once, it
// would be resolved before Alertmanager's group_wait ends, and Alertmanager notifies no
// one about a group with nothing firing. Holding it open for a minute pages for it.
const defaultResolveHold = time.Minute

// amAlert is an alert as Alertmanager's v2 API takes it (postableAlert).
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// activeAlert is what Alertmanager must keep hearing about: a firing alert until it
// resolves, then its resolution for ResolvedResendFor.
type activeAlert struct {
	Alert    model.Alert `json:"alert"`
	StartsAt time.Time   `json:"starts_at"`
	Resolved time.Time   `json:"resolved,omitzero"`
	// FiringSent is when each sink acknowledged this firing, for resolveHold.
	FiringSent map[string]time.Time `json:"firing_sent,omitempty"`
	// restoredAt is set for an alert loaded firing from a previous run: no rule
	// remembers it, so unless one fires it again it is resolved after resolveAfter.
	restoredAt time.Time
}

// alertmanagerGroup is the set of Alertmanager URLs (an HA pair gets every alert at
// every URL) with the alerts they must keep hearing about. Alertmanager forgets an
// alert whose endsAt passes without a re-send, and a restarted Alertmanager forgets
// everything: so firing alerts are re-sent every ResendInterval with endsAt a few
// intervals ahead, as Prometheus does. The active set is persisted in the state
// directory, so a restarted detector keeps re-sending what was firing, until a rule
// fires it again or resolveAfter passes without that.
type alertmanagerGroup struct {
	cfg          AlertmanagerConfig
	resolveAfter time.Duration
	client       *http.Client
	generator    *template.Template
	path         string
	now          func() time.Time
	log          *zap.Logger
	sinks        []*alertmanagerSink

	mu      sync.Mutex
	active  map[string]*activeAlert // by fingerprint
	journal *journal[activeAlert]
	// lost says why the active set could not be restored at start, nil if it was.
	lost error
}

func newAlertmanagerGroup(cfg AlertmanagerConfig, resolveAfter time.Duration, path string,
	now func() time.Time, log *zap.Logger) (*alertmanagerGroup, error) {
	if cfg.ResolveHold <= 0 {
		cfg.ResolveHold = defaultResolveHold
	}
	g := &alertmanagerGroup{
		cfg:          cfg,
		resolveAfter: resolveAfter,
		client:       httpClient(cfg.Timeout, cfg.TLS),
		path:         path,
		now:          now,
		log:          log,
		active:       make(map[string]*activeAlert),
	}
	if cfg.GeneratorURL != "" {
		t, err := template.New("generator_url").Option("missingkey=zero").Parse(cfg.GeneratorURL)
		if err != nil {
			return nil, fmt.Errorf("alertmanager generator_url: %w", err)
		}
		g.generator = t
	}
	for _, raw := range cfg.URLs {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return nil, errors.New("an alertmanager URL is not a URL with a host")
		}
		// Host and path: two Alertmanagers behind one proxy are two sinks.
		name := "alertmanager:" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/")
		g.sinks = append(g.sinks, &alertmanagerSink{group: g, endpoint: u.JoinPath("api", "v2", "alerts").String(), sinkName: name})
	}
	if err := g.load(); err != nil {
		return nil, err
	}
	return g, nil
}

// close closes the active set's journal.
func (g *alertmanagerGroup) close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.journal.close()
}

// stamp is the stage in front of the spool: it records each transition in the active
// set and fixes its StartsAt, what Alertmanager must be told for this transition even
// if the alert has fired again by the time it is delivered. Recording a transition
// twice (a retry after the spool refused it) changes nothing. The transitions are
// journaled together with one sync: the cost does not grow with the active set.
func (g *alertmanagerGroup) stamp(_ context.Context, ts ...Transition) ([]Transition, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Transition, 0, len(ts))
	fingerprints := make([]string, 0, len(ts))
	for _, t := range ts {
		t.StartsAt = g.trackLocked(t.Alert)
		out = append(out, t)
		fingerprints = append(fingerprints, t.Alert.Fingerprint)
	}
	if err := g.journal.append(g.active, true, fingerprints...); err != nil {
		return nil, err
	}
	return out, nil
}

// trackLocked records a transition in the active set and returns when its alert
// started firing.
func (g *alertmanagerGroup) trackLocked(a model.Alert) time.Time {
	startsAt := a.Time
	switch a.State {
	case model.StateFiring:
		g.active[a.Fingerprint] = &activeAlert{Alert: a, StartsAt: a.Time}
	case model.StateResolved:
		act, ok := g.active[a.Fingerprint]
		if !ok {
			act = &activeAlert{StartsAt: a.Time} // firing before a restart that lost it
			g.active[a.Fingerprint] = act
		}
		act.Alert, act.Resolved, act.restoredAt = a, a.Time, time.Time{}
		startsAt = act.StartsAt
	}
	return startsAt
}

// firingDelivered records that sink acknowledged the firing that started at startsAt.
func (g *alertmanagerGroup) firingDelivered(fingerprint string, startsAt time.Time, sink string, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	act, ok := g.active[fingerprint]
	if !ok || !act.StartsAt.Equal(startsAt) {
		return // fired again since: this delivery is not about the current one
	}
	if act.FiringSent == nil {
		act.FiringSent = make(map[string]time.Time)
	}
	act.FiringSent[sink] = at
	// Not synced: losing it costs a resolution held open a minute longer than needed.
	if err := g.journal.append(g.active, false, fingerprint); err != nil {
		g.log.Warn("save Alertmanager active alerts", zap.Error(err))
	}
}

// payload is the v2 form of a transition for sink, as of now. firingSent is when
// the sink acknowledged the firing (zero: not yet, or unknown).
func (g *alertmanagerGroup) payload(a model.Alert, startsAt, firingSent, now time.Time) amAlert {
	labels := maps.Clone(a.Labels)
	if labels == nil {
		labels = make(map[string]string)
	}
	labels["alertname"] = a.Rule
	labels["severity"] = string(a.Severity)
	p := amAlert{Labels: labels, Annotations: a.Annotations, StartsAt: startsAt}
	if a.State == model.StateResolved {
		hold := now.Add(g.cfg.ResolveHold) // the firing may not have reached this Alertmanager
		if !firingSent.IsZero() {
			hold = firingSent.Add(g.cfg.ResolveHold)
		}
		p.EndsAt = a.Time
		if hold.After(p.EndsAt) {
			p.EndsAt = hold
		}
	} else {
		// Prometheus sends endsAt = now + 4 × resend interval: lost re-sends are
		// tolerated, a detector that died stops paging within minutes.
		p.EndsAt = now.Add(4 * g.cfg.ResendInterval)
	}
	if g.generator != nil {
		var b strings.Builder
		if err := g.generator.Execute(&b, a); err == nil {
			p.GeneratorURL = b.String()
		}
	}
	return p
}

// resendLoop re-sends every active alert to every URL each ResendInterval, resolves
// restored alerts no rule re-asserted, and forgets resolutions older than
// ResolvedResendFor.
func (g *alertmanagerGroup) resendLoop(ctx context.Context, m *metrics, delivered func(sink string)) error {
	t := time.NewTicker(g.cfg.ResendInterval)
	defer t.Stop()
	failing := make(map[string]bool)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		g.expire()
		for _, s := range g.sinks {
			batch := g.activePayloads(s.sinkName)
			if len(batch) == 0 {
				continue
			}
			err := s.post(ctx, batch)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				m.resends.WithLabelValues(s.sinkName, "failed").Inc()
				if !failing[s.sinkName] {
					g.log.Warn("re-send of active alerts to Alertmanager failed; next one in an interval",
						zap.String("sink", s.sinkName), zap.Error(err))
				}
				failing[s.sinkName] = true
				continue
			}
			m.resends.WithLabelValues(s.sinkName, "sent").Inc()
			failing[s.sinkName] = false
			delivered(s.sinkName) // it answers again: do not wait out a retry backoff
		}
	}
}

// expire resolves restored alerts that no rule fired again within resolveAfter and
// forgets resolutions older than ResolvedResendFor.
func (g *alertmanagerGroup) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var changed []string
	for fp, act := range g.active {
		switch {
		case !act.restoredAt.IsZero() && now.Sub(act.restoredAt) >= g.resolveAfter:
			g.log.Info("resolving in Alertmanager an alert that was firing before the restart: "+
				"no rule fired it again", zap.String("rule", act.Alert.Rule), zap.String("fingerprint", fp))
			act.Alert.State, act.Alert.Time = model.StateResolved, now
			act.Resolved, act.restoredAt = now, time.Time{}
			changed = append(changed, fp)
		case !act.Resolved.IsZero() && now.Sub(act.Resolved) > g.cfg.ResolvedResendFor:
			delete(g.active, fp)
			changed = append(changed, fp)
		}
	}
	if len(changed) > 0 {
		if err := g.journal.append(g.active, true, changed...); err != nil {
			g.log.Warn("save Alertmanager active alerts", zap.Error(err))
		}
	}
}

func (g *alertmanagerGroup) activePayloads(sink string) []amAlert {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	var batch []amAlert
	for _, fp := range slices.Sorted(maps.Keys(g.active)) {
		act := g.active[fp]
		batch = append(batch, g.payload(act.Alert, act.StartsAt, act.FiringSent[sink], now))
	}
	return batch
}

// firingSent is when sink acknowledged the firing of the alert that started at startsAt.
func (g *alertmanagerGroup) firingSent(fingerprint string, startsAt time.Time, sink string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if act, ok := g.active[fingerprint]; ok && act.StartsAt.Equal(startsAt) {
		return act.FiringSent[sink]
	}
	return time.Time{}
}

// load restores the active set: alerts firing when the detector stopped are re-sent
// until a rule fires them again or resolveAfter passes. A set that cannot be restored
// is said (lost) rather than silently reset: Alertmanager then drops what it held
// after four re-send intervals.
func (g *alertmanagerGroup) load() error {
	j, active, lost, err := openJournal[activeAlert](g.path, "Alertmanager active alerts")
	if err != nil {
		return err
	}
	g.journal, g.active, g.lost = j, active, lost
	if lost != nil {
		g.log.Error("Alertmanager active alerts lost: alerts firing before the restart are no longer re-sent",
			zap.String("file", g.path), zap.Error(lost))
	}
	now := g.now()
	for _, act := range g.active {
		if act.Resolved.IsZero() {
			act.restoredAt = now
		}
	}
	return nil
}

// adopt records that a rule holds these alerts firing (restored with the rule state):
// they are re-sent until a rule resolves them, not resolved after resolveAfter as the
// restored alerts no rule remembers are; and one missing from the active set (its file
// lost or damaged) is added back, so that Alertmanager does not drop a page the
// detector still holds.
func (g *alertmanagerGroup) adopt(alerts []model.Alert) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var added []string
	for _, a := range alerts {
		act, ok := g.active[a.Fingerprint]
		switch {
		case !ok:
			g.active[a.Fingerprint] = &activeAlert{Alert: a, StartsAt: a.Time}
			added = append(added, a.Fingerprint)
		case act.Resolved.IsZero():
			act.restoredAt = time.Time{}
		}
	}
	if len(added) == 0 {
		return nil
	}
	g.log.Warn("alerts firing in the rule state were missing from the Alertmanager active set: re-sent again",
		zap.Int("alerts", len(added)))
	return g.journal.append(g.active, true, added...)
}

// release drops the alerts of cluster from the active set: they are no longer this
// detector's to re-send or resolve.
func (g *alertmanagerGroup) release(cluster string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var dropped []string
	for fp, act := range g.active {
		if act.Alert.Labels[model.LabelCluster] == cluster {
			delete(g.active, fp)
			dropped = append(dropped, fp)
		}
	}
	if len(dropped) == 0 {
		return nil
	}
	return g.journal.append(g.active, true, dropped...)
}

// alertmanagerSink is the Sink of one Alertmanager URL.
type alertmanagerSink struct {
	group    *alertmanagerGroup
	endpoint string
	sinkName string
}

// Name implements Sink.
func (s *alertmanagerSink) Name() string { return s.sinkName }

// Send implements Sink: it posts the transition as it stood when it was spooled.
func (s *alertmanagerSink) Send(ctx context.Context, t Transition) error {
	g := s.group
	startsAt := t.StartsAt
	if startsAt.IsZero() {
		startsAt = t.Alert.Time
	}
	sent := g.firingSent(t.Alert.Fingerprint, startsAt, s.sinkName)
	if err := s.post(ctx, []amAlert{g.payload(t.Alert, startsAt, sent, g.now())}); err != nil {
		return err
	}
	if t.Alert.State == model.StateFiring {
		g.firingDelivered(t.Alert.Fingerprint, startsAt, s.sinkName, g.now())
	}
	return nil
}

func (s *alertmanagerSink) post(ctx context.Context, alerts []amAlert) error {
	body, err := json.Marshal(alerts)
	if err != nil {
		return fmt.Errorf("encode alerts: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return errors.New("build request")
	}
	req.Header.Set("Content-Type", "application/json")
	cfg := s.group.cfg
	switch {
	case cfg.Username != "":
		req.SetBasicAuth(cfg.Username, cfg.Password)
	case cfg.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
	}
	return do(s.group.client, req)
}
