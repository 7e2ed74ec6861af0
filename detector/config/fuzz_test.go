package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

const fuzzFile = "testdata/fuzz.yaml"

// FuzzParse checks that no input makes Parse panic, and that every failure is
// reported as config errors that point into the file.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("a: &a [x, x]\nsensitive: [{table: s.t, columns: *a}, {table: s.u, columns: *a}]\n"))
	f.Add([]byte("database: {dsn: 'host=db password=x'}\n" + minimal))
	// Alert delivery: the pointer section, list entries with defaults, files
	// (relative to testdata/), URLs and templates.
	f.Add([]byte(amURL + "    basic_auth: {username: u, password_file: secrets/am-password}\n    tls: {ca_file: tls/ca.pem}\n"))
	f.Add([]byte(amURL + "    bearer_token: t\n    generator_url: '{{range .Labels}}{{$.Rule}}{{end}}{{with .X}}{{.Y}}{{end}}'\n"))
	f.Add([]byte(webhook + "    - {url: 'http://[::1]:80', secret_file: secrets/webhook-secret, timeout: 1s}\n"))
	f.Add([]byte(minimal + "alerts: {webhooks: [{url: 'https://u:p@h/x', secret:s}], spool: {max_entries: 1}}\n"))
	f.Add([]byte(minimal + "alerts: {alertmanager: {urls: [&u 'http://am', *u], generator_url: '{{template \"x\"}}'}}\n"))
	// Servers and databases written as strings or mappings.
	f.Add([]byte(minimal + "database: {dsn: 'host=db', standbys: ['host=r1', {name: r2, dsn: 'host=r2'}]}\n"))
	f.Add([]byte("targets: [{cluster: a, primary: {name: p, dsn: 'host=db'}, standbys: [host=r],\n" +
		"  databases: [app, {name: b, sensitive: [{table: s.t, columns: [c]}]}], sensitive: [{table: s.u, columns: [d]}]},\n" +
		"  {cluster: b, primary: 'postgres://db2/x', databases: all}]\n" + minimal))

	f.Fuzz(func(t *testing.T, data []byte) {
		// In testdata/, so that the files the fixtures name are found.
		cfg, err := Parse(fuzzFile, data, nil)
		if err == nil {
			if cfg == nil || len(cfg.Sensitive) == 0 && !cfg.Fleet() {
				t.Fatalf("Parse succeeded with config %+v", cfg)
			}
			checkWatches(t, cfg.Watches())
			_ = cfg.RedactedDSN()
			for _, w := range cfg.Alerts.Webhooks {
				if w.Name == "" {
					t.Errorf("webhook %q has no name", w.URL)
				}
				if _, err := w.SecretValue(); err != nil {
					t.Errorf("a webhook that loaded has no secret: %v", err)
				}
			}
			return
		}
		if cfg != nil {
			t.Errorf("Parse returned a config along with %v", err)
		}
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("error %v (%T) is not config.Errors", err, err)
		}
		for _, e := range errs {
			if e.Line < 1 || e.File != fuzzFile {
				t.Errorf("error without a place in the file: %#v", e)
			}
		}
	})
}

// checkWatches checks what a loaded Config promises the detector: at least one
// cluster, every server named, and a sensitive list for every database.
func checkWatches(t *testing.T, watches []Watch) {
	t.Helper()
	if len(watches) == 0 {
		t.Fatal("Watches() is empty")
	}
	for _, w := range watches {
		for _, s := range append([]WatchedServer{w.Primary}, w.Standbys...) {
			if s.Instance == "" {
				t.Errorf("cluster %q: a server without an instance name", w.Cluster)
			}
		}
		if w.AllDatabases && (len(w.Databases) > 0 || len(w.Sensitive) == 0) {
			t.Errorf("cluster %q: all databases, with %d listed and %d sensitive tables", w.Cluster, len(w.Databases), len(w.Sensitive))
		}
		if !w.AllDatabases && len(w.Databases) == 0 {
			t.Errorf("cluster %q: no database", w.Cluster)
		}
		for _, db := range w.Databases {
			if len(db.Sensitive) == 0 {
				t.Errorf("cluster %q, database %q: no sensitive tables", w.Cluster, db.Name)
			}
		}
	}
}
