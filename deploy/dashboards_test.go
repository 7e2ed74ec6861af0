package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/source/catalogwatch"
	"github.com/pgtripwire/pgtripwire/internal/testkit/amtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// dashboardsGlob is where the Grafana dashboards are, relative to this package.
const dashboardsGlob = "../dashboards/*.json"

// mayBeEmpty names the panels ("dashboard uid / panel title") allowed to return no data
// in TestDashboardQueries' scenario, with the reason. Every other panel must show data:
// an empty panel on the page on-call lands on reads as "nothing happened".
var mayBeEmpty = map[string]string{
	"pgtripwire-overview / Detector health alerts firing": "no detector-health alert fires while the detector is healthy",
}

// mayHaveNoValues names the query variables allowed to list no values in
// TestDashboardQueries' scenario, with the reason; their selector must still match series.
// Grafana selects "All" of a variable without values, and its allValue .* also matches
// series without the label.
var mayHaveNoValues = map[string]string{
	"cluster": "the scenario runs the minimal configuration (no targets:), whose series have no cluster label",
}

// Grafana's built-in variables, as Grafana would set them for the scenario: a 3-minute
// range, 5-second panel intervals, and a datasource whose scrape interval is 1s (so
// $__rate_interval is max($__interval + scrape interval, 4 * scrape interval)).
const (
	queryRange   = 3 * time.Minute
	queryStep    = time.Second
	rangeVar     = "3m"
	intervalVar  = "5s"
	rateInterval = "6s"
)

// dashboard is the part of a Grafana dashboard model this test reads.
type dashboard struct {
	file          string
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string         `json:"name"`
			Expr       string         `json:"expr"`
			Datasource *datasourceRef `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    *struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Instant    bool           `json:"instant"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row holds its panels
}

// allPanels flattens collapsed rows.
func (d *dashboard) allPanels() []panel {
	var all []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return all
}

// The one datasource every panel and variable must use: the dashboard's variable, so a
// dashboard works with whatever the Prometheus datasource is called where it is imported.
var promDatasource = datasourceRef{Type: "prometheus", UID: "${datasource}"}

// loadDashboards reads every dashboard and checks the structure Grafana and on-call rely
// on; the queries themselves are checked against a real Prometheus.
func loadDashboards(t *testing.T) []*dashboard {
	t.Helper()
	paths, err := filepath.Glob(dashboardsGlob)
	if err != nil || len(paths) == 0 {
		t.Fatalf("no dashboards in %s: %v", dashboardsGlob, err)
	}
	var dashboards []*dashboard
	uids, titles := map[string]string{}, map[string]string{}
	for _, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		d := &dashboard{file: filepath.Base(path)}
		if err := json.Unmarshal(raw, d); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		dashboards = append(dashboards, d)
		errorf := func(format string, args ...any) {
			t.Helper()
			t.Errorf("%s: %s", d.file, fmt.Sprintf(format, args...))
		}
		switch {
		case d.UID == "" || d.Title == "":
			errorf("uid %q, title %q: want both", d.UID, d.Title)
		case uids[d.UID] != "":
			errorf("uid %s is also %s's", d.UID, uids[d.UID])
		case titles[d.Title] != "":
			errorf("title %q is also %s's", d.Title, titles[d.Title])
		}
		uids[d.UID], titles[d.Title] = d.file, d.file
		if d.SchemaVersion < 39 {
			errorf("schemaVersion %d, want 39 or later", d.SchemaVersion)
		}
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
			if v.Type == "query" && (v.Datasource == nil || *v.Datasource != promDatasource) {
				errorf("variable %s: datasource %+v, want %+v", v.Name, v.Datasource, promDatasource)
			}
		}
		if !vars["datasource"] {
			errorf("no datasource variable")
		}
		ids := map[int]bool{}
		for _, p := range d.allPanels() {
			if ids[p.ID] {
				errorf("panel %q: id %d is not unique", p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.Title == "" {
				errorf("panel %d has no title", p.ID)
			}
			if g := p.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				errorf("panel %q: gridPos %+v, want one within the 24 columns", p.Title, g)
			}
			if p.Type == "row" || p.Type == "text" {
				continue
			}
			if p.Datasource == nil || *p.Datasource != promDatasource {
				errorf("panel %q: datasource %+v, want %+v", p.Title, p.Datasource, promDatasource)
			}
			if len(p.Targets) == 0 {
				errorf("panel %q has no targets", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
					errorf("panel %q: target %q: want a unique refId and an expression", p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource != nil && *tg.Datasource != promDatasource {
					errorf("panel %q: target %s: datasource %+v, want %+v", p.Title, tg.RefID, tg.Datasource, promDatasource)
				}
			}
		}
	}
	for name := range mayHaveNoValues {
		if !slices.ContainsFunc(dashboards, func(d *dashboard) bool {
			return slices.ContainsFunc(d.Templating.List, func(v variable) bool { return v.Name == name })
		}) {
			t.Errorf("mayHaveNoValues names variable %s, which no dashboard has", name)
		}
	}
	for key := range mayBeEmpty {
		if !slices.ContainsFunc(dashboards, func(d *dashboard) bool {
			return slices.ContainsFunc(d.allPanels(), func(p panel) bool { return d.UID+" / "+p.Title == key })
		}) {
			t.Errorf("mayBeEmpty names %q, which no dashboard has", key)
		}
	}
	return dashboards
}

// TestDashboardQueries runs the attack scenario against a detector scraped by the real
// Prometheus and executes every panel query, annotation and variable of every dashboard
// through Prometheus' HTTP API, as Grafana would: each must parse, and each panel must
// show data unless mayBeEmpty says why it may not.
func TestDashboardQueries(t *testing.T) {
	dashboards := loadDashboards(t)
	if t.Failed() {
		t.FailNow()
	}

	// Not app and mallory: roles belong to the package's shared cluster, and the compose
	// init scripts that TestComposeStackPagesOnADump runs create those without IF NOT EXISTS.
	const (
		users    = 5_000
		intruder = "eve"
		app      = "webapp"
	)
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (
		id bigserial PRIMARY KEY,
		email text NOT NULL,
		username text NOT NULL UNIQUE,
		password_hash text NOT NULL)`)
	db.Exec(t, `INSERT INTO public.users (email, username, password_hash)
		SELECT 'user' || i || '@example.com', 'user' || i, '$2b$12$' || md5(i::text)
		FROM generate_series(1, $1::int) AS i`, users)
	for _, role := range []string{intruder, app} {
		db.CreateRole(t, role)
		db.Exec(t, fmt.Sprintf(`GRANT SELECT ON public.users TO %s`, role))
	}

	// An Alertmanager, so that the delivery panels have something to show.
	am := amtest.Start(t)
	cfg := detectortest.Config(t, db)
	cfg.Alerts.Alertmanager.URLs = []string{am.URL}
	// Every source of the defaults, as the CLI runs them: the catalog watch too.
	detectortest.PollSettings(t, cfg, catalogwatch.Name).Enabled = true
	// The registry the CLI builds: the detector's metrics, Go's and the process'.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	detectorAddr := detectortest.Start(t, cfg, detector.Deps{Registry: reg}).Addr()

	prom := startPrometheus(t, detectorAddr)
	eventually(t, 10*time.Second, "a scrape of the detector", func() bool {
		return prom.value(t, `up{job="pgtripwire"}`) == 1
	})

	conns := map[string]*pgx.Conn{intruder: db.Conn(t, intruder), app: db.Conn(t, app)}
	read := func(role string, sql string, args ...any) {
		t.Helper()
		rows, err := conns[role].Query(t.Context(), sql, args...)
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		rows.Close() // reads the rest of the rows: the client takes them all, as a dump does
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", role, err)
		}
	}
	const (
		dump   = `SELECT email, username, password_hash FROM users`
		lookup = `SELECT email, password_hash FROM users WHERE username = $1`
	)
	// Benign lookups and the intruder's first dump, scraped; then more of both, and a second
	// dump of other columns (a second alert, a second delivery), scraped too: the rates
	// and histograms need two scrapes around a change.
	for i := range 5 {
		read(app, lookup, fmt.Sprintf("user%d", i+1))
	}
	read(intruder, dump)
	rowsOf := func(role string) float64 {
		return prom.value(t, `sum(pgtripwire_sensitive_rows_read_total{role="`+role+`"})`)
	}
	eventually(t, 15*time.Second, "the first dump and its delivery in Prometheus", func() bool {
		return rowsOf(intruder) >= users && rowsOf(app) >= 5 &&
			prom.value(t, `sum(pgtripwire_notify_sent_total)`) >= 1
	})
	for i := range 5 {
		read(app, lookup, fmt.Sprintf("user%d", i+100))
	}
	read(intruder, dump)
	read(intruder, dump)
	read(intruder, `SELECT email FROM users`)
	eventually(t, 15*time.Second, "the rest of the scenario in Prometheus", func() bool {
		return rowsOf(intruder) >= 4*users && rowsOf(app) >= 10 &&
			prom.value(t, `sum(pgtripwire_alerts_total)`) >= 2 &&
			prom.value(t, `sum(pgtripwire_notify_sent_total)`) >= 2
	})
	// Keep scraping a little, as Prometheus would while on-call opens the dashboard: a
	// rate needs two samples in its window, and subqueries evaluate at multiples of their step.
	scrapes := `count_over_time(up{job="pgtripwire"}[1h])`
	scraped := prom.value(t, scrapes)
	eventually(t, 15*time.Second, "eight more scrapes", func() bool {
		return prom.value(t, scrapes) >= scraped+8
	})

	end := time.Now()
	// The server the scenario reads on, as the server label and the $server variable name it.
	server := cfg.Watches()[0].Primary.Instance
	// The metrics of watched servers, which $cluster and $server must narrow; the others
	// (alerts, delivery, the process) are the detector's.
	serverMetrics := map[string]bool{}
	watched, err := prom.series(`{__name__=~"pgtripwire_.+", server!=""}`, end)
	if err != nil || len(watched) == 0 {
		t.Fatalf("no series with a server label (%v): the detector labels its sources' metrics with their server", err)
	}
	for _, s := range watched {
		serverMetrics[s["__name__"]] = true
	}
	// Grafana's view of the scenario: every cluster, server, database, role and table
	// ("All", with allValue .*), and the investigation of the intruder on the server the
	// dumps ran on. The cluster is "All" in both: the minimal configuration names none, and
	// Grafana selects "All" of a variable without values. Then a server and a cluster the
	// detector does not watch, as a fleet operator picks one of another detector's.
	selections := []struct {
		name string
		vars map[string]string
		// unwatched names the variable set to a cluster or server the detector does not
		// watch: the variables after it and the panels that list only watched servers'
		// series must be empty, or they offer or show servers the operator did not select.
		unwatched string
	}{
		{"all", map[string]string{"cluster": ".*", "server": ".*", "database": ".*", "table": ".*", "role": ".*"}, ""},
		{intruder, map[string]string{"cluster": ".*", "server": grafanaRegex(server), "database": grafanaRegex(db.Name),
			"table": grafanaRegex("public.users"), "role": grafanaRegex(intruder)}, ""},
		{"unwatched-server", map[string]string{"cluster": ".*", "server": "unwatched", "database": ".*", "table": ".*", "role": ".*"}, "server"},
		{"unwatched-cluster", map[string]string{"cluster": "unwatched", "server": ".*", "database": ".*", "table": ".*", "role": ".*"}, "cluster"},
	}
	for _, sel := range selections {
		// "All" of job and instance without an allValue: Grafana's regex of the values.
		sel.vars["job"] = grafanaRegex("pgtripwire")
		sel.vars["instance"] = grafanaRegex(detectorAddr)
		expand := func(expr string) string {
			for _, kv := range [][2]string{
				{"$__rate_interval", rateInterval}, {"$__interval", intervalVar}, {"$__range", rangeVar},
			} {
				expr = strings.ReplaceAll(expr, kv[0], kv[1])
			}
			for name, value := range sel.vars {
				expr = strings.ReplaceAll(expr, "${"+name+"}", value)
				expr = strings.ReplaceAll(expr, "$"+name, value)
			}
			return expr
		}
		for _, dash := range dashboards {
			t.Run(sel.name+"/"+dash.UID, func(t *testing.T) {
				past := false // past sel.unwatched: the variables chained after it
				for _, v := range dash.Templating.List {
					chained := past
					past = past || v.Name == sel.unwatched
					if v.Type != "query" {
						continue
					}
					query := variableQuery(t, v.Name, v.Query)
					switch {
					case sel.unwatched == "":
						checkVariable(t, prom, v.Name, expand(query), end, mayHaveNoValues[v.Name] != "")
					case chained && showsOnlyServers(query, serverMetrics):
						checkVariableEmpty(t, prom, v.Name, expand(query), end)
					}
				}
				for _, a := range dash.Annotations.List {
					if a.Expr == "" || sel.unwatched != "" {
						continue
					}
					expr := expand(a.Expr)
					if _, err := prom.queryRange(expr, end); err != nil {
						t.Errorf("annotation %q: %s: %v", a.Name, expr, err)
					}
				}
				for _, p := range dash.allPanels() {
					key := dash.UID + " / " + p.Title
					for _, tg := range p.Targets {
						expr := expand(tg.Expr)
						if strings.Contains(expr, "$") {
							t.Errorf("panel %q, target %s: %s: an unknown variable", p.Title, tg.RefID, expr)
							continue
						}
						var got []series
						var err error
						if tg.Instant {
							got, err = prom.query(expr, end)
						} else {
							got, err = prom.queryRange(expr, end)
						}
						switch {
						case err != nil:
							t.Errorf("panel %q, target %s: %s: %v", p.Title, tg.RefID, expr, err)
						case sel.unwatched != "":
							if hasData(got) && showsOnlyServers(expr, serverMetrics) {
								t.Errorf("panel %q, target %s: shows servers not selected: %s", p.Title, tg.RefID, expr)
							}
						case !hasData(got) && mayBeEmpty[key] == "":
							t.Errorf("panel %q, target %s: no data: %s", p.Title, tg.RefID, expr)
						case hasData(got) && mayBeEmpty[key] != "":
							t.Logf("panel %q is allowed to be empty (%s) but has data", p.Title, mayBeEmpty[key])
						}
					}
				}
			})
		}
	}

	// A user reading "how much did the intruder take" must see every dump, the first one
	// included: it created the intruder's series, and increase() alone drops a series' first value.
	for _, dash := range dashboards {
		for _, p := range dash.allPanels() {
			if !slices.Contains([]string{"Sensitive rows read (range)", "Sensitive rows read by $role (range)"}, p.Title) {
				continue
			}
			expr := strings.NewReplacer("$__range", rangeVar, "$job", "pgtripwire", "$instance", ".*",
				"$cluster", ".*", "$server", ".*", "$database", ".*", "$table", "public.users", "$role", intruder).Replace(p.Targets[0].Expr)
			if got := prom.value(t, expr); got < 4*users {
				t.Errorf("%s / %s: got %v rows for %s, want at least the %d of the four dumps", dash.UID, p.Title, got, intruder, 4*users)
			}
		}
	}

	// A fleet operator looking for a blind database finds each source by its server and
	// database: the scenario's, each source up.
	found := false
	for _, dash := range dashboards {
		for _, p := range dash.allPanels() {
			if p.Title != "Sources up by server" {
				continue
			}
			found = true
			expr := strings.NewReplacer("$job", "pgtripwire", "$instance", ".*", "$cluster", ".*", "$server", ".*").
				Replace(p.Targets[0].Expr)
			got, err := prom.query(expr, end)
			if err != nil {
				t.Fatalf("%s / %s: %s: %v", dash.UID, p.Title, expr, err)
			}
			sources := map[string]string{}
			for _, s := range got {
				if s.Metric["server"] != server || s.Metric["database"] != db.Name || len(s.Value) != 2 {
					t.Errorf("%s / %s: got %v, want only the scenario's server %s and database %s", dash.UID, p.Title, s.Metric, server, db.Name)
					continue
				}
				sources[s.Metric["source"]], _ = s.Value[1].(string)
			}
			if sources["statements"] != "1" || sources["catalog"] != "1" {
				t.Errorf("%s / %s: got sources %v, want statements and catalog up (1) on %s/%s", dash.UID, p.Title, sources, server, db.Name)
			}
		}
	}
	if !found {
		t.Error(`no dashboard has the panel "Sources up by server"`)
	}
}

// grafanaRegex is what Grafana's Prometheus datasource puts for $var in a query when the
// variable (multi-value or with "All") has values selected: each escaped as a regular
// expression inside a PromQL string literal, several as one alternation.
func grafanaRegex(values ...string) string {
	escaped := make([]string, len(values))
	for i, v := range values {
		escaped[i] = strings.ReplaceAll(regexp.QuoteMeta(v), `\`, `\\`)
	}
	if len(escaped) == 1 {
		return escaped[0]
	}
	return "(" + strings.Join(escaped, "|") + ")"
}

var metricName = regexp.MustCompile(`\bpgtripwire_[a-z0-9_]+`)

// showsOnlyServers reports whether expr reads only metrics of watched servers
// (serverMetrics), so that a selection of servers must narrow all it shows. A query
// that also selects the detector's own components (server="") shows them whatever the
// selection, on purpose.
func showsOnlyServers(expr string, serverMetrics map[string]bool) bool {
	names := metricName.FindAllString(expr, -1)
	return len(names) > 0 && !strings.Contains(expr, `server=""`) &&
		!slices.ContainsFunc(names, func(n string) bool { return !serverMetrics[n] })
}

var labelValuesQuery = regexp.MustCompile(`^label_values\((?:(.+),\s*)?(\w+)\)$`)

// variableQuery returns a query variable's label_values query.
func variableQuery(t *testing.T, name string, raw json.RawMessage) string {
	t.Helper()
	var q struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(raw, &q); err != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			t.Fatalf("variable %s: query %s", name, raw)
		}
		q.Query = s
	}
	return q.Query
}

// checkVariable runs label_values(selector, label) as Grafana does (a series lookup over
// the range) and requires values (a variable without any selects nothing) unless
// mayHaveNone; then it requires series at least, which a mistyped selector would not match.
func checkVariable(t *testing.T, prom *promServer, name, query string, end time.Time, mayHaveNone bool) {
	t.Helper()
	m := labelValuesQuery.FindStringSubmatch(query)
	if m == nil || m[1] == "" {
		t.Errorf("variable %s: %q: want label_values(selector, label)", name, query)
		return
	}
	selector, label := m[1], m[2]
	got, err := prom.series(selector, end)
	if err != nil {
		t.Errorf("variable %s: %s: %v", name, query, err)
		return
	}
	switch {
	case slices.ContainsFunc(got, func(s map[string]string) bool { return s[label] != "" }):
	case !mayHaveNone:
		t.Errorf("variable %s: %s: no values", name, query)
	case len(got) == 0:
		t.Errorf("variable %s: %s: no series", name, query)
	}
}

// checkVariableEmpty runs label_values(selector, label) as checkVariable does and
// requires no series: the variable comes after one that selects nothing watched.
func checkVariableEmpty(t *testing.T, prom *promServer, name, query string, end time.Time) {
	t.Helper()
	m := labelValuesQuery.FindStringSubmatch(query)
	if m == nil || m[1] == "" {
		t.Errorf("variable %s: %q: want label_values(selector, label)", name, query)
		return
	}
	got, err := prom.series(m[1], end)
	switch {
	case err != nil:
		t.Errorf("variable %s: %s: %v", name, query, err)
	case len(got) > 0:
		t.Errorf("variable %s: %s: got values of %d series, want none: it lists servers not selected", name, query, len(got))
	}
}

// series is one series of a query result, instant or range.
type series struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`  // instant: [time, "value"]
	Values [][]any           `json:"values"` // range
}

// hasData reports whether Grafana would draw something: a finite sample. Quantiles of
// histograms that saw nothing in a window are NaN, which Grafana shows as no data.
func hasData(result []series) bool {
	finite := func(sample []any) bool {
		if len(sample) != 2 {
			return false
		}
		s, _ := sample[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		return err == nil && !math.IsNaN(v) && !math.IsInf(v, 0)
	}
	for _, s := range result {
		if finite(s.Value) || slices.ContainsFunc(s.Values, finite) {
			return true
		}
	}
	return false
}

// promServer is a Prometheus server started by the test.
type promServer struct {
	url string
}

// startPrometheus runs the Prometheus on the machine with a 1-second scrape of the
// detector at target, under the job name and with the detector-health rules of the
// compose stack, and stops it when t ends.
func startPrometheus(t *testing.T, target string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not installed (%v): %s", err, installDepsAdvisory)
	}
	rules, err := filepath.Abs(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: pgtripwire
    static_configs:
      - targets: [%q]
`, rules, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=error")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Tie Prometheus to this process, so a killed test leaves no server behind
	// (Pdeathsig follows the thread that started it: keep that thread alive).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, exited := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(exited)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
	}()
	if err := <-started; err != nil {
		t.Fatalf("start Prometheus: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	p := &promServer{url: "http://" + addr}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			t.Fatal("Prometheus exited during startup (see its log above)")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Prometheus not ready within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get calls a Prometheus API endpoint and decodes its data into v; a query that does not
// parse or fails is an error carrying Prometheus' message.
func (p *promServer) get(path string, params url.Values, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url+path, strings.NewReader(params.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: HTTP %d: %w", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", body.ErrorType, body.Error)
	}
	return json.Unmarshal(body.Data, v)
}

type queryData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

func (d queryData) series() ([]series, error) {
	switch d.ResultType {
	case "vector", "matrix":
		var s []series
		err := json.Unmarshal(d.Result, &s)
		return s, err
	case "scalar":
		var sample []any
		err := json.Unmarshal(d.Result, &sample)
		return []series{{Value: sample}}, err
	default:
		return nil, fmt.Errorf("result type %s, want a vector, a matrix or a scalar", d.ResultType)
	}
}

func (p *promServer) query(expr string, at time.Time) ([]series, error) {
	var d queryData
	if err := p.get("/api/v1/query", url.Values{
		"query": {expr},
		"time":  {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)},
	}, &d); err != nil {
		return nil, err
	}
	return d.series()
}

func (p *promServer) queryRange(expr string, end time.Time) ([]series, error) {
	var d queryData
	if err := p.get("/api/v1/query_range", url.Values{
		"query": {expr},
		"start": {strconv.FormatFloat(float64(end.Add(-queryRange).UnixMilli())/1000, 'f', 3, 64)},
		"end":   {strconv.FormatFloat(float64(end.UnixMilli())/1000, 'f', 3, 64)},
		"step":  {queryStep.String()},
	}, &d); err != nil {
		return nil, err
	}
	return d.series()
}

// series returns the label sets of the series selector matches in the range ending at end.
func (p *promServer) series(selector string, end time.Time) ([]map[string]string, error) {
	var got []map[string]string
	err := p.get("/api/v1/series", url.Values{
		"match[]": {selector},
		"start":   {strconv.FormatInt(end.Add(-queryRange).Unix(), 10)},
		"end":     {strconv.FormatInt(end.Unix(), 10)},
	}, &got)
	return got, err
}

// value is the single value of an instant query now, or NaN when it has none.
func (p *promServer) value(t *testing.T, expr string) float64 {
	t.Helper()
	got, err := p.query(expr, time.Now())
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	if len(got) != 1 || len(got[0].Value) != 2 {
		return math.NaN()
	}
	s, _ := got[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return math.NaN()
	}
	return v
}
