package detector

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/model"
	"github.com/pgtripwire/pgtripwire/rules/rulefmt"
)

// AnnotationEvidenceURL is the annotation linking an alert to its evidence.
const AnnotationEvidenceURL = "evidence_url"

// EvidencePath is where the HTTP server serves an alert's evidence; the fingerprint
// follows it.
const EvidencePath = "/api/v1/evidence/"

// evidenceLinks is how the pipeline hands firing alerts to the evidence capturer and
// links every alert line to its evidence.
type evidenceLinks struct {
	capturer *evidence.Capturer
	// base is the external URL the evidence paths are appended to, without a
	// trailing slash.
	base string
	// urgent are the rules whose capture is followed by an automatic response: they
	// go before the others.
	urgent map[string]bool
	// info is pgtripwire_alert_evidence_info: one series per firing alert (at most
	// maxEvidenceInfo), so that a dashboard can list a role's alerts with their
	// evidence links; a resolved alert's series is deleted.
	info      *prometheus.GaugeVec
	infoCount int
	// responded holds, per firing alert of a responding rule, the pids already handed
	// to the response (the one that fired it, and the later ones): a session visits
	// several canary rows, and is responded to once.
	responded map[string]map[int32]bool
}

// maxRespondedPIDs bounds the pids remembered per alert; beyond, a session may be
// responded to twice (a second, refused "session gone" line), never missed.
const maxRespondedPIDs = 10_000

// firstResponse reports whether the session of pid was not yet handed to the response
// of alert fp, and remembers it.
func (l *evidenceLinks) firstResponse(fp string, pid int32) bool {
	if l.responded == nil {
		l.responded = map[string]map[int32]bool{}
	}
	pids := l.responded[fp]
	if pids == nil {
		pids = map[int32]bool{}
		l.responded[fp] = pids
	}
	if pids[pid] {
		return false
	}
	if len(pids) < maxRespondedPIDs {
		pids[pid] = true
	}
	return true
}

// maxEvidenceInfo bounds pgtripwire_alert_evidence_info's series: beyond it (an alert
// storm) alerts are delivered and their evidence captured, but not listed on the
// dashboard.
const maxEvidenceInfo = 1000

func newEvidenceInfo(reg prometheus.Registerer) *prometheus.GaugeVec {
	return promauto.With(reg).NewGaugeVec(prometheus.GaugeOpts{
		Name: "pgtripwire_alert_evidence_info",
		Help: "One series per alert firing now (at most 1000), valued at its firing time (Unix seconds), labelled with its evidence_url: how a dashboard links a role's alerts to their evidence.",
	}, []string{"rule", "severity", "fingerprint", "cluster", "server", "database", "table", "role", "evidence_url"})
}

// setInfo adds or, for a resolved alert, removes a's evidence info series.
func (l *evidenceLinks) setInfo(a *model.Alert) {
	labels := prometheus.Labels{
		"rule": a.Rule, "severity": string(a.Severity), "fingerprint": a.Fingerprint,
		"cluster": a.Labels[model.LabelCluster], "server": a.Labels[model.LabelInstance], "database": a.Labels[model.LabelDatabase], "table": a.Labels[model.LabelTable], "role": a.Labels[model.LabelRole],
		"evidence_url": a.Annotations[AnnotationEvidenceURL],
	}
	if a.State != model.StateFiring {
		if l.info.Delete(labels) {
			l.infoCount--
		}
		return
	}
	if l.infoCount >= maxEvidenceInfo {
		return
	}
	if l.info.Delete(labels) {
		l.infoCount--
	}
	l.info.With(labels).Set(float64(a.Time.Unix()))
	l.infoCount++
}

// link adds the evidence_url annotation to a (firing or resolved: every line of the
// alert points to its evidence) and, for a firing alert, queues its capture. trigger is
// the event that caused the transition, nil for one due to the clock.
func (l *evidenceLinks) link(a *model.Alert, trigger *model.Event) {
	if l == nil {
		return
	}
	l.addURL(a)
	l.setInfo(a)
	if a.State != model.StateFiring {
		delete(l.responded, a.Fingerprint)
		return
	}
	var t *model.Event
	if trigger != nil {
		ev := *trigger
		t = &ev
		if l.urgent[a.Rule] && ev.PID != 0 {
			l.firstResponse(a.Fingerprint, ev.PID)
		}
	}
	l.capturer.Fired(*a, t, l.urgent[a.Rule])
}

// again hands the capturer a new event in the episode of a firing alert of a rule that
// responds on its own: the automatic response acts on its session too.
func (l *evidenceLinks) again(a model.Alert, trigger *model.Event) {
	if l == nil || !l.urgent[a.Rule] || !l.firstResponse(a.Fingerprint, trigger.PID) {
		return
	}
	ev := *trigger
	l.capturer.Again(a, &ev)
}

// annotate adds the evidence_url annotation to alerts restored at start, without
// capturing anything: their evidence, if any, was captured when they fired.
func (l *evidenceLinks) annotate(alerts []model.Alert) []model.Alert {
	if l == nil {
		return alerts
	}
	out := make([]model.Alert, len(alerts))
	for i, a := range alerts {
		l.addURL(&a)
		l.setInfo(&a)
		out[i] = a
	}
	return out
}

// addURL sets a's evidence_url annotation, on a copy of its annotations: the engine
// keeps the map it rendered.
func (l *evidenceLinks) addURL(a *model.Alert) {
	ann := maps.Clone(a.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationEvidenceURL] = l.base + EvidencePath + a.Fingerprint
	a.Annotations = ann
}

// externalURL is http.external_url without its trailing slash or, when it is not set,
// http://HOSTNAME:PORT of the address the HTTP server listens on, as Prometheus derives
// its own external URL.
func externalURL(cfg *config.Config, listen net.Addr) (string, error) {
	if cfg.HTTP.ExternalURL != "" {
		return strings.TrimRight(cfg.HTTP.ExternalURL, "/"), nil
	}
	_, port, err := net.SplitHostPort(listen.String())
	if err != nil {
		return "", fmt.Errorf("external URL from %s: %w", listen, err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}
	return u.String(), nil
}

// EvidenceStore is the evidence directory of cfg: where the detector saves evidence,
// and the commands read it.
func EvidenceStore(cfg *config.Config) *evidence.Store {
	return evidence.NewStore(filepath.Join(cfg.StateDir, evidence.Dir), cfg.Evidence.Retain, int(cfg.Evidence.MaxAlerts))
}

// respondingRules names the rules that respond on their own under cfg: none when
// response.automatic is off.
func respondingRules(cfg *config.Config, groups []rulefmt.Group) map[string]bool {
	out := map[string]bool{}
	if cfg.Response.Automatic == config.ResponseOff {
		return out
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Precise && r.Response != nil && r.Response.Terminate {
				out[r.Name] = true
			}
		}
	}
	return out
}

// connectFunc returns a function opening a new connection with c, named for what it is
// for in pg_stat_activity.
// where is the place an alert's evidence is captured on (evidence.Options.Where): its
// server and database.
func where(a model.Alert) string {
	return a.Labels[model.LabelCluster] + "\x00" + a.Labels[model.LabelInstance] + "\x00" + a.Labels[model.LabelDatabase]
}

// evidenceConnect connects the evidence capturer to the server and database of an
// alert (where's), or with def for an alert that names no server the detector
// watches (its own alerts: a state file lost).
func (d *Detector) evidenceConnect(def *pgx.ConnConfig) func(ctx context.Context, at string) (*pgx.Conn, error) {
	return func(ctx context.Context, at string) (*pgx.Conn, error) {
		c := def
		if d.cfg.Fleet() && len(d.servers) > 0 {
			c = d.servers[0].conn // database.dsn is not the fleet's: its first primary
		}
		parts := strings.SplitN(at, "\x00", 3)
		for _, srv := range d.servers {
			if len(parts) == 3 && srv.cluster == parts[0] && srv.instance == parts[1] {
				c = srv.conn.Copy()
				if parts[2] != "" {
					c.Database = parts[2]
				}
				break
			}
		}
		return connectFunc(c, "pgtripwire evidence")(ctx)
	}
}

func connectFunc(c *pgx.ConnConfig, application string) func(ctx context.Context) (*pgx.Conn, error) {
	c = c.Copy()
	c.RuntimeParams["application_name"] = application
	return func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, c) }
}
