package detector_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/ha"
	"github.com/pgtripwire/pgtripwire/detector/source/catalogwatch"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/pgserver"
	"github.com/pgtripwire/pgtripwire/internal/testkit/detectortest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

// gapRE reads a WALDecodingGap alert's object label (wal.KindDecodingGap).
var gapRE = regexp.MustCompile(`^(\S+) \(timeline (\d+), (\S+)\) to (\S+) \(timeline (\d+), (\S+)\)$`)

// #18 acceptance 2: the detector watches a primary through a multi-host DSN over it and
// its streaming standby (target_session_attrs=read-write), with the WAL source in auto
// mode as setup prepares it. The standby is promoted and the old primary stopped: within
// 30 s the detector watches the new primary — its WAL source streams from a slot there,
// its statements source polls it — a warning names the changes that were never
// decoded, and a mass password-hash change after the promotion pages, under the same
// instance label as a mass change before it. What the new primary's counters hold of
// its time as a standby (a dump, a count, a few lookups there) pages nothing.
func TestFailoverOfTheWatchedCluster(t *testing.T) {
	t.Parallel()
	failover(t, false)
}

// The same with high_availability: the lease lives on the primary, through the same
// multi-host DSN; the old primary's end ends it, and the detector takes it again on
// the new primary, whose pgtripwire schema holds the rule state and replay guard as
// replicated before the promotion.
func TestFailoverOfTheWatchedClusterWithHighAvailability(t *testing.T) {
	t.Parallel()
	failover(t, true)
}

func failover(t *testing.T, highAvailability bool) {
	primary := pgtest.NewServer(t, nil)
	db := pgtest.NewDatabaseIn(t, primary)
	seedUsers(t, db, 5_000)
	if highAvailability {
		for _, sql := range ha.SchemaSQL {
			db.Exec(t, sql)
		}
	}
	// What pgtripwire setup prepares for the WAL source (a failover slot on 17+).
	db.Exec(t, `ALTER TABLE public.users REPLICA IDENTITY FULL`)
	db.Exec(t, `CREATE PUBLICATION pgtripwire FOR TABLE public.users`)
	if primary.Version() >= 17 {
		db.Exec(t, `SELECT pg_create_logical_replication_slot('pgtripwire', 'pgoutput', failover => true)`)
	} else {
		db.Exec(t, `SELECT pg_create_logical_replication_slot('pgtripwire', 'pgoutput')`)
	}
	standby := pgtest.NewStandby(t, primary)
	// A synchronous commit flushes the WAL the standby waits for: the harness commits
	// asynchronously, and the slot's last record would reach it only with the next
	// snapshot record (15 s).
	flush := db.Conn(t, "postgres")
	for _, sql := range []string{`SET synchronous_commit = on`, `SELECT txid_current()`} {
		if _, err := flush.Exec(t.Context(), sql); err != nil {
			t.Fatal(err)
		}
	}
	pgtest.WaitReplay(t, standby, primary)
	onStandby := &pgtest.Database{Name: db.Name, Server: standby}

	cfg := detectortest.Config(t, db)
	cfg.Database.DSN = fmt.Sprintf("host=%s,%s port=%d,%d user=postgres dbname=%s sslmode=disable target_session_attrs=read-write",
		primary.Host(), standby.Host(), primary.Port(), standby.Port(), db.Name)
	instance := fmt.Sprintf("%s:%d,%s:%d", primary.Host(), primary.Port(), standby.Host(), standby.Port())
	if w := wal.SettingsOf(cfg.Sources); w.Enabled != wal.Auto {
		t.Fatalf("sources.wal.enabled defaults to %q, want auto", w.Enabled)
	}
	// The clusters are the test's own: the catalog watch sees only what the test does.
	detectortest.PollSettings(t, cfg, catalogwatch.Name).Enabled = true
	cfg.Replication.Allowed = []config.AllowedReplication{{Role: "postgres", Application: "walreceiver", ClientCIDR: "127.0.0.1/32"}}
	cfg.HighAvailability.Enabled = highAvailability
	began := time.Now()
	r := detectortest.Start(t, cfg)
	t.Logf("detector started in %s", time.Since(began).Round(10*time.Millisecond))
	eventually(t, 10*time.Second, "the WAL source streaming", func() bool {
		return r.Gauge(t, "pgtripwire_wal_slot_active", map[string]string{"slot": "pgtripwire"}) == 1
	})
	eventually(t, 10*time.Second, "the statements source up", func() bool {
		return r.Gauge(t, "pgtripwire_source_up", map[string]string{"source": "statements", "server": instance}) == 1
	})

	// Before: a mass change of emails on the primary pages, naming the server by all
	// its hosts; it is the last transaction the WAL source decodes there.
	conn := db.Conn(t, "postgres")
	changedAt := time.Now()
	changeEnd := pgtest.CommitEnd(t, conn, `UPDATE public.users SET email = 'old-' || email`)
	before := r.WaitAlert(t, 10*time.Second, "MassCredentialChange", map[string]string{"columns": "email"})
	if before.Labels[model.LabelInstance] != instance {
		t.Fatalf("the mass change before the failover: instance %q, want %q", before.Labels[model.LabelInstance], instance)
	}
	pgtest.WaitReplay(t, standby, primary)

	// On the standby, unwatched: a dashboard, logins, a dump. Its counters keep them.
	analyst := onStandby.Conn(t, "mallory")
	for _, q := range []string{`SELECT count(*) FROM users`, `SELECT id, email FROM users WHERE username = 'user7'`,
		`SELECT id, email FROM users WHERE username = 'user8'`, `SELECT email, username, password_hash FROM users`} {
		if _, err := analyst.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	// On 17+ a standby that synchronises slots keeps the detector's: then there is no gap.
	synced := false
	if standby.Version() >= 17 {
		if err := onStandby.Conn(t, "postgres").QueryRow(t.Context(),
			`SELECT count(*) = 1 FROM pg_replication_slots WHERE slot_name = 'pgtripwire' AND synced`).Scan(&synced); err != nil {
			t.Fatal(err)
		}
	}

	// The table counters count (their warm-up after the first poll is over), so that
	// the old primary's counters diffed with the new one's would page.
	eventually(t, 20*time.Second, "the table counters counting", func() bool {
		return r.Gauge(t, "pgtripwire_tables_baseline_complete", nil) == 1
	})

	t.Logf("failing over %s after the detector started", time.Since(began).Round(10*time.Millisecond))
	promoted := time.Now()
	if err := standby.Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := primary.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Logf("promoted and stopped the old primary in %s (synchronised slot: %v)", stopped.Sub(promoted).Round(time.Millisecond), synced)

	// Within 30 s the detector watches the new primary.
	newPrimary := onStandby.Conn(t, "postgres")
	eventually(t, 30*time.Second, "the WAL source streaming from a slot on the new primary", func() bool {
		var active bool
		err := newPrimary.QueryRow(t.Context(), `SELECT active FROM pg_replication_slots WHERE slot_name = 'pgtripwire'`).Scan(&active)
		return err == nil && active && r.Gauge(t, "pgtripwire_wal_slot_active", map[string]string{"slot": "pgtripwire"}) == 1
	})
	// Without high availability the sources see the server change under them; with it,
	// the lease ends with the old primary and the sources start afresh on the new one.
	moved := func(source string) bool {
		if highAvailability {
			return r.Counter(t, "pgtripwire_lease_acquisitions_total", map[string]string{"cluster": ""}) == 2 &&
				r.Gauge(t, "pgtripwire_lease_held", map[string]string{"cluster": ""}) == 1
		}
		return r.Counter(t, "pgtripwire_source_server_changes_total", map[string]string{"source": source}) == 1
	}
	eventually(t, 30*time.Second-time.Since(stopped), "the statements source polling the new primary", func() bool {
		return moved("statements") && r.Gauge(t, "pgtripwire_source_up", map[string]string{"source": "statements", "server": instance}) == 1
	})
	t.Logf("watching the new primary %s after the old one stopped", time.Since(stopped).Round(10*time.Millisecond))

	if !synced {
		gap := r.WaitAlert(t, 30*time.Second-time.Since(stopped), "WALDecodingGap", nil)
		checkGap(t, gap, instance, db.Name, changeEnd, changedAt, promoted, stopped, standby)
	}

	// After: a mass change of password hashes on the new primary pages, as the same server.
	updated := time.Now()
	onStandby.Exec(t, `UPDATE public.users SET password_hash = '$2b$12$attacker' || id`)
	after := r.WaitAlert(t, 10*time.Second, "MassCredentialChange", map[string]string{"columns": "password_hash"})
	t.Logf("the mass change on the new primary paged %s after it", time.Since(updated).Round(10*time.Millisecond))
	if after.Labels[model.LabelInstance] != instance || after.Labels["source"] != "wal" || after.Value != 5_000 {
		t.Errorf("the mass change after the failover: got %v value %v, want instance %s, source wal, 5000 rows",
			after.Labels, after.Value, instance)
	}

	// Nothing else: let every polling source poll the new primary a few times (the
	// old primary's counters diffed with the new one's would page at the first), then
	// look at what fired.
	tables, catalog := r.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": "tables"}),
		r.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": "catalog"})
	eventually(t, 10*time.Second, "the table counters and the catalog watch polling the new primary", func() bool {
		return moved("tables") && moved("catalog") &&
			r.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": "tables"}) >= tables+3 &&
			r.Counter(t, "pgtripwire_source_polls_total", map[string]string{"source": "catalog"}) >= catalog+3
	})
	wantFiring := map[string]int{"MassCredentialChange": 2, "WALDecodingGap": 1}
	if synced {
		wantFiring["WALDecodingGap"] = 0
	}
	gotFiring := map[string]int{}
	for _, a := range r.Lines(t) {
		if a.State != model.StateFiring {
			continue
		}
		gotFiring[a.Rule]++
		if wantFiring[a.Rule] == 0 {
			t.Errorf("%s fired (labels %v): nothing but the two mass changes and the gap should", a.Rule, a.Labels)
		}
		if a.Labels[model.LabelInstance] != instance {
			t.Errorf("%s fired on instance %q, want %q: the server's name stays across the failover", a.Rule, a.Labels[model.LabelInstance], instance)
		}
	}
	for rule, n := range wantFiring {
		if gotFiring[rule] != n {
			t.Errorf("%s fired %d times, want %d", rule, gotFiring[rule], n)
		}
	}
}

// checkGap checks what the WALDecodingGap alert says: from the last position decoded on
// the old primary — at or after the mass change, at or before where the new timeline
// forked — to where the new slot started, after the promotion.
func checkGap(t *testing.T, a model.Alert, instance, database string, changeEnd pglogrepl.LSN, changedAt, promoted, stopped time.Time,
	server *pgserver.Server) {
	t.Helper()
	newPrimary, err := pgx.Connect(t.Context(), server.SuperuserDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer newPrimary.Close(context.Background())
	if a.Severity != model.SeverityWarning || a.Labels[model.LabelInstance] != instance || a.Labels["database"] != database ||
		a.Labels["operation"] != wal.GapSlotCreated {
		t.Errorf("gap alert: got severity %s labels %v, want a warning on %s, database %s, operation %q",
			a.Severity, a.Labels, instance, database, wal.GapSlotCreated)
	}
	m := gapRE.FindStringSubmatch(a.Labels["object"])
	if m == nil {
		t.Fatalf("gap alert's object %q: want \"LSN (timeline N, time) to LSN (timeline N, time)\"", a.Labels["object"])
	}
	lsn := func(s string) pglogrepl.LSN {
		l, err := pglogrepl.ParseLSN(s)
		if err != nil {
			t.Fatalf("gap alert's object %q: %v", a.Labels["object"], err)
		}
		return l
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("gap alert's object %q: %v", a.Labels["object"], err)
		}
		return v
	}
	from, fromTL, fromAt := lsn(m[1]), m[2], at(m[3])
	to, toTL, toAt := lsn(m[4]), m[5], at(m[6])
	var history string
	// Read in another database than the watched one: reading a server file pages there.
	if err := newPrimary.QueryRow(t.Context(), `SELECT pg_read_file('pg_wal/00000002.history')`).Scan(&history); err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(history)
	if len(fields) < 2 || fields[0] != "1" {
		t.Fatalf("timeline 2's history: %q", history)
	}
	fork := lsn(fields[1])
	var slotAt string
	if err := newPrimary.QueryRow(t.Context(), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'pgtripwire'`).Scan(&slotAt); err != nil {
		t.Fatal(err)
	}
	const slack = time.Second // the servers' clock is the test's, read a little apart
	if fromTL != "1" || toTL != "2" {
		t.Errorf("gap timelines: got %s to %s, want 1 to 2", fromTL, toTL)
	}
	if from < changeEnd || from > fork {
		t.Errorf("gap start %s: want at or after the last change decoded (%s) and at most the fork %s", from, changeEnd, fork)
	}
	if fromAt.Before(changedAt.Add(-slack)) || fromAt.After(stopped.Add(slack)) {
		t.Errorf("gap start time %s: want between the last change (%s) and the old primary's stop (%s)",
			fromAt, changedAt.Format(time.RFC3339Nano), stopped.Format(time.RFC3339Nano))
	}
	if to <= fork || to > lsn(slotAt) {
		t.Errorf("gap end %s: want past the fork %s, at most the new slot's position %s", to, fork, slotAt)
	}
	if toAt.Before(promoted.Add(-slack)) || toAt.After(time.Now().Add(slack)) {
		t.Errorf("gap end time %s: want after the promotion (%s)", toAt, promoted.Format(time.RFC3339Nano))
	}
	if !strings.Contains(a.Annotations["description"], a.Labels["object"]) {
		t.Errorf("gap description %q: want it to name the gap %s", a.Annotations["description"], a.Labels["object"])
	}
	t.Logf("gap: %s (fork %s)", a.Labels["object"], fork)
}
