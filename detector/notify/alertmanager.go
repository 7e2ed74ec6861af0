package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/alert"
)

// amAlert is an alert as Alertmanager's v2 API takes it (postableAlert).
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// activeAlert is what Alertmanager must keep hearing about: a firing alert until it
// resolves, then its resolution for ResolvedResendFor.
type activeAlert struct {
	Alert    alert.Alert `json:"alert"`
	StartsAt time.Time   `json:"starts_at"`
	Resolved time.Time   `json:"resolved,omitzero"`
}

// alertmanagerGroup is the set of Alertmanager URLs (an HA pair gets every alert at
// every URL) with the alerts they must keep hearing about. Alertmanager forgets an
// alert whose endsAt passes without a re-send, and a restarted Alertmanager forgets
// everything: so firing alerts are re-sent every ResendInterval with endsAt a few
// intervals ahead, as Prometheus does. The active set is persisted in the state
// directory, so a restarted detector keeps re-sending what was firing.
type alertmanagerGroup struct {
	cfg       AlertmanagerConfig
	client    *http.Client
	generator *template.Template
	path      string
	now       func() time.Time
	log       *zap.Logger
	sinks     []*alertmanagerSink

	mu     sync.Mutex
	active map[string]*activeAlert // by fingerprint
}

func newAlertmanagerGroup(cfg AlertmanagerConfig, path string, now func() time.Time, log *zap.Logger) (*alertmanagerGroup, error) {
	g := &alertmanagerGroup{
		cfg:    cfg,
		client: httpClient(cfg.Timeout, cfg.TLS),
		path:   path,
		now:    now,
		log:    log,
		active: make(map[string]*activeAlert),
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
			return nil, fmt.Errorf("alertmanager URL %q is not a URL with a host", u.Redacted())
		}
		endpoint := u.JoinPath("api", "v2", "alerts").String()
		g.sinks = append(g.sinks, &alertmanagerSink{group: g, endpoint: endpoint, sinkName: "alertmanager:" + u.Host})
	}
	if err := g.load(); err != nil {
		return nil, err
	}
	return g, nil
}

// track records a transition in the active set before it is spooled.
func (g *alertmanagerGroup) track(a alert.Alert) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch a.State {
	case alert.StateFiring:
		g.active[a.Fingerprint] = &activeAlert{Alert: a, StartsAt: a.Time}
	case alert.StateResolved:
		act, ok := g.active[a.Fingerprint]
		if !ok {
			act = &activeAlert{StartsAt: a.Time} // firing before a restart that lost it
			g.active[a.Fingerprint] = act
		}
		act.Alert, act.Resolved = a, a.Time
	}
	return g.saveLocked()
}

// payload is the v2 form of a transition, as of now.
func (g *alertmanagerGroup) payload(a alert.Alert, startsAt time.Time, now time.Time) amAlert {
	labels := maps.Clone(a.Labels)
	if labels == nil {
		labels = make(map[string]string)
	}
	labels["alertname"] = a.Rule
	labels["severity"] = string(a.Severity)
	p := amAlert{Labels: labels, Annotations: a.Annotations, StartsAt: startsAt}
	if a.State == alert.StateResolved {
		p.EndsAt = a.Time
	} else {
		// Prometheus sends endsAt = now + 4 × resend interval: lost re-sends are
		// tolerated, a detector that died stops paging within minutes.
		p.EndsAt = now.Add(4 * g.cfg.ResendInterval)
	}
	if g.generator != nil {
		var b strings.Builder
		if err := g.generator.Execute(&b, a); err != nil {
			g.log.Warn("generator_url template failed; sending none", zap.Error(err))
		} else {
			p.GeneratorURL = b.String()
		}
	}
	return p
}

// resendLoop re-sends every active alert to every URL each ResendInterval and forgets
// resolutions older than ResolvedResendFor.
func (g *alertmanagerGroup) resendLoop(ctx context.Context, m *metrics) error {
	t := time.NewTicker(g.cfg.ResendInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		batch := g.activePayloads()
		if len(batch) == 0 {
			continue
		}
		for _, s := range g.sinks {
			outcome := "sent"
			if err := s.post(ctx, batch); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				outcome = "failed"
				g.log.Debug("re-send to Alertmanager failed; next one in an interval",
					zap.String("sink", s.sinkName), zap.Error(err))
			}
			m.resends.WithLabelValues(s.sinkName, outcome).Inc()
		}
	}
}

func (g *alertmanagerGroup) activePayloads() []amAlert {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	changed := false
	var batch []amAlert
	for _, fp := range slices.Sorted(maps.Keys(g.active)) {
		act := g.active[fp]
		if !act.Resolved.IsZero() && now.Sub(act.Resolved) > g.cfg.ResolvedResendFor {
			delete(g.active, fp)
			changed = true
			continue
		}
		batch = append(batch, g.payload(act.Alert, act.StartsAt, now))
	}
	if changed {
		if err := g.saveLocked(); err != nil {
			g.log.Warn("save Alertmanager active alerts", zap.Error(err))
		}
	}
	return batch
}

func (g *alertmanagerGroup) startsAt(a alert.Alert) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if act, ok := g.active[a.Fingerprint]; ok && !act.StartsAt.IsZero() {
		return act.StartsAt
	}
	return a.Time
}

func (g *alertmanagerGroup) load() error {
	data, err := os.ReadFile(g.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read Alertmanager active alerts: %w", err)
	}
	if err := json.Unmarshal(data, &g.active); err != nil {
		// A corrupt file costs re-sends of what was firing, not detection: keep going.
		g.log.Error("Alertmanager active alerts unreadable; starting with none",
			zap.String("file", g.path), zap.Error(err))
		g.active = make(map[string]*activeAlert)
	}
	return nil
}

func (g *alertmanagerGroup) saveLocked() error {
	data, err := json.Marshal(g.active)
	if err != nil {
		return fmt.Errorf("encode Alertmanager active alerts: %w", err)
	}
	if err := writeFileAtomic(g.path, data); err != nil {
		return fmt.Errorf("save Alertmanager active alerts: %w", err)
	}
	return nil
}

// alertmanagerSink delivers spooled transitions to one Alertmanager URL.
type alertmanagerSink struct {
	group    *alertmanagerGroup
	endpoint string
	sinkName string
}

func (s *alertmanagerSink) name() string { return s.sinkName }

func (s *alertmanagerSink) deliver(ctx context.Context, e Entry) error {
	g := s.group
	return s.post(ctx, []amAlert{g.payload(e.Alert, g.startsAt(e.Alert), g.now())})
}

func (s *alertmanagerSink) post(ctx context.Context, alerts []amAlert) error {
	body, err := json.Marshal(alerts)
	if err != nil {
		return fmt.Errorf("encode alerts: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	cfg := s.group.cfg
	switch {
	case cfg.Username != "":
		req.SetBasicAuth(cfg.Username, cfg.Password)
	case cfg.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
	}
	resp, err := s.group.client.Do(req)
	if err != nil {
		return fmt.Errorf("post alerts: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return &statusError{code: resp.StatusCode, body: strings.TrimSpace(string(msg))}
	}
	return nil
}
