package detector_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/config"
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
