package detector_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector"
	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/evidence"
	"github.com/pgtripwire/pgtripwire/internal/pgserver"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// A dump run on a hot standby never shows in the primary's statistics: the detector
// watches the standby too, and its page says which server the read ran on.
func TestStandbyReadPagesNamingTheStandby(t *testing.T) {
	t.Parallel()
	primary := pgtest.NewServer(t, nil)
	db := pgtest.NewDatabaseIn(t, primary)
	seedUsers(t, db, 20_000)
	standby := pgtest.NewStandby(t, primary)
	pgtest.WaitReplay(t, standby, primary)
	onStandby := &pgtest.Database{Name: db.Name, Server: standby}

	cfg := detectortest.Config(t, db)
	cfg.Database.Standbys = []config.Server{{Name: "replica-1", DSN: standby.SuperuserDSN(db.Name)}}
	// The standby's own stream, which the replication watch would page on otherwise.
	cfg.Replication.Allowed = []config.AllowedReplication{{Role: "postgres", Application: "walreceiver", ClientCIDR: "127.0.0.1/32"}}
	r := detectortest.Start(t, cfg)
	primaryInstance := fmt.Sprintf("%s:%d", primary.Host(), primary.Port())

	// What a dashboard or a login does on the standby pages nothing.
	analyst := onStandby.Conn(t, "mallory")
	for _, q := range []string{`SELECT count(*) FROM users`, `SELECT id, email FROM users WHERE username = 'user7'`} {
		if _, err := analyst.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}

	bulkRead(t, onStandby)
	read := time.Now()
	got := r.WaitAlert(t, 5*time.Second, "SensitiveBulkRead", map[string]string{model.LabelInstance: "replica-1"})
	t.Logf("the standby's read paged %s after it ended", time.Since(read).Round(10*time.Millisecond))
	want := map[string]string{"database": db.Name, "role": "mallory", "table": "public.users",
		"columns": "email,password_hash,username", "source": "statements"}
	for k, v := range want {
		if got.Labels[k] != v {
			t.Errorf("label %s: got %q, want %q", k, got.Labels[k], v)
		}
	}
	if got.Value != 20_000 {
		t.Errorf("value: got %v, want 20000 (the rows read on the standby)", got.Value)
	}
	if _, ok := got.Labels[model.LabelCluster]; ok {
		t.Errorf("label cluster: got %q, want none without targets:", got.Labels[model.LabelCluster])
	}
	for _, a := range r.Lines(t) {
		if a.State == model.StateFiring && a.Labels[model.LabelInstance] != "replica-1" {
			t.Errorf("%s fired on %s: the read ran on the standby only (labels %v)", a.Rule, a.Labels[model.LabelInstance], a.Labels)
		}
	}

	// The same rows folded into one value on the standby (its blocks say how many it
	// read: the standby's own table sizes) page too, as another statement.
	var folded string
	if err := analyst.QueryRow(t.Context(), `SELECT string_agg(email || ':' || password_hash, ',') FROM users`).Scan(&folded); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the folded read on the standby to page", func() bool {
		n := 0
		for _, a := range r.Lines(t) {
			if a.State == model.StateFiring && a.Rule == "SensitiveBulkRead" && a.Labels[model.LabelInstance] == "replica-1" {
				n++
			}
		}
		return n == 2
	})

	// A slow read on the standby is seen while it runs, there.
	slow := onStandby.Conn(t, "mallory")
	finished := make(chan error, 1)
	go func() {
		rows, err := slow.Query(context.Background(), `SELECT email, password_hash, pg_sleep(0.00025) FROM users`)
		if err == nil {
			for rows.Next() {
			}
			err = rows.Err()
		}
		finished <- err
	}()
	running := r.WaitAlert(t, 10*time.Second, "SensitiveReadInProgress", map[string]string{"role": "mallory"})
	select {
	case err := <-finished:
		t.Errorf("the slow read on the standby ended (%v) before it was alerted", err)
	default:
	}
	if running.Labels[model.LabelInstance] != "replica-1" || running.Labels["pid"] == "" {
		t.Errorf("the running read's alert: got %v, want instance replica-1 and the standby backend's pid", running.Labels)
	}
	if err := <-finished; err != nil {
		t.Fatal(err)
	}

	bulkRead(t, db)
	got = r.WaitAlert(t, 5*time.Second, "SensitiveBulkRead", map[string]string{model.LabelInstance: primaryInstance})
	if got.Labels["database"] != db.Name || got.Value != 20_000 {
		t.Errorf("the primary's alert: got %v value %v, want database %s, 20000 rows", got.Labels, got.Value, db.Name)
	}
	// Both servers' sources are healthy and say where they watch.
	for _, inst := range []string{"replica-1", primaryInstance} {
		if up := r.Gauge(t, "pgtripwire_source_up", map[string]string{"source": "statements", "server": inst, "database": db.Name}); up != 1 {
			t.Errorf("pgtripwire_source_up{source=statements, server=%s}: got %v, want 1", inst, up)
		}
	}
}

// One detector watches two clusters of three databases each: a read in one database
// of each pages once, naming its cluster, server and database, and the databases of a
// server cost one connection each plus the server's two (docs/deployment.md).
func TestOneDetectorWatchesTwoClustersOfThreeDatabases(t *testing.T) {
	t.Parallel()
	users, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	detectortest.Local(t, cfg)
	detectortest.EverySource(t, cfg, time.Second)
	type cluster struct {
		srv *pgserver.Server
		dbs []*pgtest.Database
	}
	clusters := map[string]*cluster{}
	for _, name := range []string{"eu", "us"} {
		c := &cluster{srv: pgtest.NewServer(t, nil)}
		for range 3 {
			db := pgtest.NewDatabaseIn(t, c.srv)
			seedUsers(t, db, 5_000)
			c.dbs = append(c.dbs, db)
		}
		clusters[name] = c
	}
	eu, us := clusters["eu"], clusters["us"]
	var euDatabases []config.TargetDatabase
	for _, db := range eu.dbs {
		euDatabases = append(euDatabases, config.TargetDatabase{Name: db.Name})
	}
	cfg.Targets = []config.Target{
		{Cluster: "eu", Primary: config.Server{Name: "eu-1", DSN: eu.srv.SuperuserDSN("postgres")},
			Databases: config.TargetDatabases{List: euDatabases}, Sensitive: []config.SensitiveTable{users}},
		// Every database of us, found at start: its three and postgres.
		{Cluster: "us", Primary: config.Server{DSN: us.srv.SuperuserDSN("postgres")},
			Databases: config.TargetDatabases{All: true}, Sensitive: []config.SensitiveTable{users}},
	}
	r := detectortest.Start(t, cfg)
	usInstance := fmt.Sprintf("%s:%d", us.srv.Host(), us.srv.Port())

	// Dashboards' counts and logins page nowhere.
	for _, c := range clusters {
		for _, db := range c.dbs {
			conn := db.Conn(t, "app")
			for _, q := range []string{`SELECT count(*) FROM users`, `SELECT id, password_hash FROM users WHERE username = 'user9'`} {
				if _, err := conn.Exec(t.Context(), q); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	bulkRead(t, eu.dbs[1])
	bulkRead(t, us.dbs[2])
	got := map[string]model.Alert{
		"eu": r.WaitAlert(t, 5*time.Second, "SensitiveBulkRead", map[string]string{model.LabelDatabase: eu.dbs[1].Name}),
		"us": r.WaitAlert(t, 5*time.Second, "SensitiveBulkRead", map[string]string{model.LabelDatabase: us.dbs[2].Name}),
	}
	want := map[string]map[string]string{
		"eu": {model.LabelCluster: "eu", model.LabelInstance: "eu-1", "role": "mallory", "table": "public.users"},
		"us": {model.LabelCluster: "us", model.LabelInstance: usInstance, "role": "mallory", "table": "public.users"},
	}
	for c, labels := range want {
		for k, v := range labels {
			if got[c].Labels[k] != v {
				t.Errorf("%s's alert: label %s = %q, want %q (labels %v)", c, k, got[c].Labels[k], v, got[c].Labels)
			}
		}
		if got[c].Value != 5_000 {
			t.Errorf("%s's alert: value %v, want 5000", c, got[c].Value)
		}
	}
	// Each alert's evidence was captured on its own server and database: the role's
	// privileges there, the statement's counters there.
	store := detector.EvidenceStore(cfg)
	for c, a := range got {
		var e *evidence.Evidence
		eventually(t, 10*time.Second, c+"'s evidence", func() bool {
			var err error
			e, err = store.Load(a.Fingerprint)
			return err == nil
		})
		if len(e.Problems) > 0 || e.Privileges == nil || !slices.Contains(e.Privileges.Effective, "SELECT") ||
			e.Statement == nil || e.Statement.Rows < 5_000 {
			t.Errorf("%s's evidence: problems %q, privileges %+v, statement %+v; want SELECT and the read's counters",
				c, e.Problems, e.Privileges, e.Statement)
		}
	}
	// A second poll round: nothing else fired (no other database, no double count).
	time.Sleep(2 * time.Second)
	for _, a := range r.Lines(t) {
		if a.State != model.StateFiring {
			continue
		}
		if a.Fingerprint != got["eu"].Fingerprint && a.Fingerprint != got["us"].Fingerprint {
			t.Errorf("%s fired with %v: only the two reads should page", a.Rule, a.Labels)
		}
	}
	// A logical slot made in a watched database that is not the DSN's own is seen by
	// the server's catalog watch (it streams that database's changes).
	(&pgtest.Database{Name: eu.dbs[2].Name, Server: eu.srv}).Exec(t,
		`SELECT pg_create_logical_replication_slot('intruder_slot', 'pgoutput')`)
	slot := r.WaitAlert(t, 10*time.Second, "ForeignReplicationSlot", map[string]string{model.LabelCluster: "eu"})
	if slot.Labels["object"] != "intruder_slot" || slot.Labels[model.LabelInstance] != "eu-1" {
		t.Errorf("the slot's alert: got %v, want intruder_slot on eu-1", slot.Labels)
	}
	// The connection budget: per server, one per database and two of its own (the
	// statistics reader, the cluster-wide sources).
	for name, c := range clusters {
		want := len(c.dbs) + 2
		if name == "us" {
			want++ // its postgres database, found by databases: all
		}
		var n int
		conn := (&pgtest.Database{Name: "postgres", Server: c.srv}).Conn(t, "postgres")
		if err := conn.QueryRow(t.Context(),
			`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgtripwire'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("%s: %d connections of the detector, want %d", name, n, want)
		}
	}
}

// The statistics connection of a server watched with several databases failing (here:
// pg_stat_statements missing in its database) blinds what reads through it, and says
// so, but not the databases' other sources: a bulk read still pages through the table
// counters.
func TestAFailedStatisticsConnectionBlindsOnlyWhatReadsThroughIt(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t, nil)
	var dbs []config.TargetDatabase
	var first *pgtest.Database
	for range 2 {
		db := pgtest.NewDatabaseIn(t, srv)
		seedUsers(t, db, 5_000)
		dbs = append(dbs, config.TargetDatabase{Name: db.Name})
		if first == nil {
			first = db
		}
	}
	(&pgtest.Database{Name: "postgres", Server: srv}).Exec(t, `DROP EXTENSION pg_stat_statements`)
	users, err := config.NewSensitiveTable("public.users", "email", "username", "password_hash")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	detectortest.Local(t, cfg)
	cfg.Targets = []config.Target{{Cluster: "eu", Primary: config.Server{Name: "eu-1", DSN: srv.SuperuserDSN("postgres")},
		Databases: config.TargetDatabases{List: dbs}, Sensitive: []config.SensitiveTable{users}}}
	r := detectortest.Run(t, cfg)

	var body string
	eventually(t, 30*time.Second, "/readyz to name the statements source's blind spot", func() bool {
		resp, err := http.Get(r.URL("/readyz"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(body, "through database postgres")
	})
	t.Logf("/readyz: %s", body)
	eventually(t, 30*time.Second, "the table counters' baseline", func() bool {
		return r.Gauge(t, "pgtripwire_tables_baseline_complete", map[string]string{"database": first.Name}) == 1
	})
	if up := r.Gauge(t, "pgtripwire_source_up", map[string]string{"source": "tables", "database": first.Name}); up != 1 {
		t.Errorf("the table counters of %s: up %v, want 1 (they do not read through the statistics connection)", first.Name, up)
	}
	bulkRead(t, first)
	r.WaitAlert(t, 30*time.Second, "UnexplainedSensitiveReads", map[string]string{model.LabelDatabase: first.Name})
}
