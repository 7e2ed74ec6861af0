package catalogwatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/wal"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// find returns the first event of kind about object (and role, unless "") that sink
// recorded.
func find(sink *sourcetest.Recorder, kind, object, role string) (model.Event, bool) {
	events := sink.Find(func(e model.Event) bool {
		return e.Kind == kind && e.Object == object && (role == "" || e.Role == role)
	})
	if len(events) == 0 {
		return model.Event{}, false
	}
	return events[0], true
}

// superuser is the connection configuration of db's superuser.
func superuser(t *testing.T, db *pgtest.Database) *pgx.ConnConfig {
	t.Helper()
	conn, err := pgx.ParseConfig(db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// start runs the catalog source on db as the superuser, the WAL source's slot and
// publication being pgtripwire_own, and waits for its baseline.
func start(t *testing.T, db *pgtest.Database) *sourcetest.Recorder {
	t.Helper()
	return startAs(t, superuser(t, db), "pgtripwire_own")
}

// startAs runs the catalog source as the detector builds it from its configuration
// (the default interval of 1 s; the WAL source's walsender known by conn's user and
// application_name) with conn, the WAL source streaming from the slot and publication
// own, and waits for its baseline. The sink records a hand-over per poll after the
// baseline, so that a test can wait for polls before asserting an absence.
func startAs(t *testing.T, conn *pgx.ConnConfig, own string) *sourcetest.Recorder {
	t.Helper()
	sink := &sourcetest.Recorder{}
	reg := prometheus.NewRegistry()
	settings := Definition.Settings()
	part, err := settings.Build(source.Env{
		Name:        Name,
		Conn:        conn,
		Sensitive:   map[string][]string{"public.users": {"email", "password_hash", "username"}},
		Replication: source.Replication{Slot: own, Publication: own},
		Sink:        sink,
		Logger:      zap.NewNop(),
		Registerer:  reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	if part.Interval != time.Second {
		t.Fatalf("default interval: got %s, want 1s", part.Interval)
	}
	h := sourcetest.Start(t, conn, reg, source.Polled{Name: Name, Poller: part.Poller, Interval: part.Interval})
	sourcetest.WaitReady(t, h)
	return sink
}

// within waits up to 5 s (the acceptance bound) for an event and returns it.
func within(t *testing.T, sink *sourcetest.Recorder, kind, object, role string) model.Event {
	t.Helper()
	var ev model.Event
	begin := time.Now()
	sourcetest.Eventually(t, 5*time.Second, fmt.Sprintf("%s event for %s", kind, object), func() bool {
		var ok bool
		ev, ok = find(sink, kind, object, role)
		return ok
	})
	t.Logf("%s %s seen after %s", kind, object, time.Since(begin).Round(time.Millisecond))
	if ev.Source != Name {
		t.Errorf("source: got %q, want %q", ev.Source, Name)
	}
	return ev
}

// cleanupExec runs sql as the superuser when t ends (t.Context is over by then).
func cleanupExec(t *testing.T, db *pgtest.Database, sql string, args ...any) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.Server.Exec(ctx, db.Name, sql, args...); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

func seed(t *testing.T, db *pgtest.Database) {
	t.Helper()
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text);
		CREATE TABLE public.orders (id int PRIMARY KEY, total numeric)`)
}

func TestRoleAttributes(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, "watch_mallory", "NOSUPERUSER", "NOBYPASSRLS", "NOREPLICATION")
	db.CreateRole(t, "watch_admin_before", "BYPASSRLS")
	sink := start(t, db)

	db.Exec(t, `ALTER ROLE watch_mallory BYPASSRLS`)
	ev := within(t, sink, KindRoleAttribute, "BYPASSRLS", "watch_mallory")
	if ev.Operation != "BYPASSRLS" {
		t.Errorf("operation: got %q, want BYPASSRLS", ev.Operation)
	}
	db.Exec(t, `ALTER ROLE watch_mallory SUPERUSER`)
	within(t, sink, KindRoleAttribute, "SUPERUSER", "watch_mallory")
	db.Exec(t, `CREATE ROLE watch_new_replicator REPLICATION`)
	cleanupExec(t, db, `DROP ROLE watch_new_replicator`)
	within(t, sink, KindRoleAttribute, "REPLICATION", "watch_new_replicator")

	// A role that had the attribute before the detector started is history, not news.
	sink.WaitCalls(t, 2)
	if ev, ok := find(sink, KindRoleAttribute, "BYPASSRLS", "watch_admin_before"); ok {
		t.Errorf("baseline role reported: %+v", ev)
	}
}

func TestRoleMembership(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, "watch_member_direct")
	db.CreateRole(t, "watch_member_indirect")
	db.CreateRole(t, "watch_group", "NOLOGIN")
	db.CreateRole(t, "watch_monitor")
	sink := start(t, db)

	db.Exec(t, `GRANT pg_read_all_data TO watch_member_direct`)
	cleanupExec(t, db, `REVOKE pg_read_all_data FROM watch_member_direct`)
	ev := within(t, sink, KindRoleMembership, "pg_read_all_data", "watch_member_direct")
	if ev.Database != "" {
		t.Errorf("database of a cluster-wide change: got %q, want none", ev.Database)
	}

	// Through a group: the member reads all data just the same.
	db.Exec(t, `GRANT watch_group TO watch_member_indirect; GRANT pg_execute_server_program TO watch_group`)
	cleanupExec(t, db, `REVOKE pg_execute_server_program FROM watch_group`)
	within(t, sink, KindRoleMembership, "pg_execute_server_program", "watch_member_indirect")

	// pg_monitor is what the detector's own role needs: not dangerous.
	db.Exec(t, `GRANT pg_monitor TO watch_monitor`)
	sink.WaitCalls(t, 2)
	for _, e := range sink.Events() {
		if e.Role == "watch_monitor" {
			t.Errorf("pg_monitor membership reported: %+v", e)
		}
	}
}

func TestLogicalSlotOfAnotherRole(t *testing.T) {
	db := pgtest.NewDatabase(t)
	seed(t, db)
	db.CreateRole(t, "watch_slotter", "REPLICATION")
	db.Exec(t, `SELECT pg_create_logical_replication_slot('pgtripwire_own', 'test_decoding')`)
	cleanupExec(t, db, `SELECT pg_drop_replication_slot('pgtripwire_own')`)
	sink := start(t, db)

	intruder := db.Conn(t, "watch_slotter")
	slot := "watch_intruder_" + db.Name
	if _, err := intruder.Exec(t.Context(), `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, slot); err != nil {
		t.Fatal(err)
	}
	cleanupExec(t, db, `SELECT pg_drop_replication_slot($1)`, slot)
	ev := within(t, sink, KindSlotCreated, slot, "")
	if ev.Database != db.Name || ev.Operation != "logical" {
		t.Errorf("slot_created: got database %q operation %q, want %q logical", ev.Database, ev.Operation, db.Name)
	}

	// Reading the slot through the SQL interface is using it. The harness commits
	// asynchronously, and decoding sees only flushed WAL: read until the insert comes.
	db.Exec(t, `INSERT INTO public.users VALUES (1, 'a@example.com', 'a', 'x')`)
	sourcetest.Eventually(t, 10*time.Second, "decoded change", func() bool {
		var n int
		err := intruder.QueryRow(t.Context(), `SELECT count(*) FROM pg_logical_slot_get_changes($1, NULL, NULL)`, slot).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	within(t, sink, KindSlotUsed, slot, "")

	// Our own slot, read the same way while the WAL source is not attached, is news too:
	// the changes read are consumed, and the WAL source never sees them.
	db.Exec(t, `SELECT count(*) FROM pg_logical_slot_get_changes('pgtripwire_own', NULL, NULL)`)
	within(t, sink, KindOwnSlotUsed, "pgtripwire_own", "")
	if ev, ok := find(sink, KindSlotCreated, "pgtripwire_own", ""); ok {
		t.Errorf("own slot reported as created: %+v", ev)
	}
}

// The WAL source streaming from our slot is not news; the slot read through the SQL
// interface while the WAL source is down is.
func TestOwnSlotReadBehindTheWALSource(t *testing.T) {
	db := pgtest.NewDatabase(t)
	seed(t, db)
	own := db.Name
	// Created beforehand, as pgtripwire setup does: the WAL source's walsender attaching
	// to it later is a new walsender on a known slot, recognised as ours.
	db.Exec(t, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, own)
	cleanupExec(t, db, `SELECT pg_drop_replication_slot($1)`, own)
	// As the detector configures its connections; the WAL source uses the same.
	conn := superuser(t, db)
	conn.RuntimeParams["application_name"] = "pgtripwire"
	sink := startAs(t, conn, own)

	reg := prometheus.NewRegistry()
	h := health.New(reg)
	h.Register(wal.Name)
	changes := &sourcetest.Recorder{}
	stream := wal.New(wal.Config{Conn: &conn.Config, Slot: own, Publication: own,
		Tables:         map[string][]string{"public.users": {"email", "password_hash", "username"}},
		StatusInterval: 100 * time.Millisecond}, changes, h, zap.NewNop(), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- stream.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("WAL source: got %v, want context.Canceled", err)
		}
	})
	t.Cleanup(stop)
	sourcetest.WaitReady(t, h) // streaming

	su := db.Conn(t, "postgres")
	confirmed := func() string {
		var lsn string
		if err := su.QueryRow(t.Context(), `SELECT coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots
			WHERE slot_name = $1`, own).Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	before := confirmed()
	db.Exec(t, `INSERT INTO public.users VALUES (1, 'a@example.com', 'a', 'x')`)
	sourcetest.Eventually(t, 10*time.Second, "the WAL source to hand the insert over", func() bool { return len(changes.Events()) > 0 })
	sourcetest.Eventually(t, 10*time.Second, "the WAL source to confirm it", func() bool { return confirmed() != before })
	sink.WaitCalls(t, 2)
	for _, e := range sink.Events() {
		if e.Object == own {
			t.Errorf("the WAL source's own streaming reported: %+v", e)
		}
	}

	// The detector's WAL source is down; someone reads what it would have seen. (Within
	// one interval of our walsender leaving, what it confirmed last cannot be told from a
	// read: wait for a poll that saw the slot free.)
	stop()
	sourcetest.Eventually(t, 10*time.Second, "the walsender to leave", func() bool {
		var active bool
		if err := su.QueryRow(t.Context(), `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, own).Scan(&active); err != nil {
			t.Fatal(err)
		}
		return !active
	})
	sink.WaitCalls(t, 2)
	db.Exec(t, `INSERT INTO public.users VALUES (2, 'b@example.com', 'b', 'y')`)
	sourcetest.Eventually(t, 10*time.Second, "decoded change", func() bool {
		var n int
		if err := su.QueryRow(t.Context(), `SELECT count(*) FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
			'proto_version', '1', 'publication_names', $2)`, own, own).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	within(t, sink, KindOwnSlotUsed, own, "")
}

func TestOwnSlotUsed(t *testing.T) {
	s := New(Config{OwnUser: "detector", OwnApplication: "pgtripwire"}, nil, zap.NewNop(), prometheus.NewRegistry())
	ours := func(pid int32, confirmed string) slot {
		return slot{typ: "logical", active: true, pid: pid, backendType: "walsender", user: "detector",
			application: "pgtripwire", confirmed: confirmed}
	}
	idle := func(confirmed string) slot { return slot{typ: "logical", confirmed: confirmed} }
	for _, tc := range []struct {
		name     string
		old, cur slot
		want     bool
	}{
		{"our walsender streams", ours(10, "0/100"), ours(10, "0/200"), false},
		{"our walsender attaches", idle("0/100"), ours(11, "0/200"), false},
		{"our walsender reconnects", ours(10, "0/100"), ours(11, "0/200"), false},
		{"our walsender leaves", ours(10, "0/100"), idle("0/200"), false},
		{"idle and untouched", idle("0/100"), idle("0/100"), false},
		{"read and released between polls", idle("0/100"), idle("0/200"), true},
		{"peeked between polls", idle("0/100"), slot{typ: "logical", confirmed: "0/100", decoded: 5}, true},
		{"a client backend holds it", idle("0/100"), slot{typ: "logical", active: true, pid: 12,
			backendType: "client backend", user: "mallory", confirmed: "0/100"}, true},
		{"a walsender of another application", idle("0/100"), slot{typ: "logical", active: true, pid: 13,
			backendType: "walsender", user: "detector", application: "pg_recvlogical", confirmed: "0/100"}, true},
		{"our application name, another role", ours(10, "0/100"), slot{typ: "logical", active: true, pid: 14,
			backendType: "walsender", user: "mallory", application: "pgtripwire", confirmed: "0/100"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.ownSlotUsed(tc.old, tc.cur); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStatementsReset(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sink := start(t, db)
	db.CreateRole(t, "watch_resetter")
	// No argument list: PostgreSQL 17's pg_stat_statements added one (minmax_only).
	db.Exec(t, `GRANT EXECUTE ON FUNCTION pg_stat_statements_reset TO watch_resetter`)
	conn := db.Conn(t, "watch_resetter")
	if _, err := conn.Exec(t.Context(), `SELECT pg_stat_statements_reset()`); err != nil {
		t.Fatal(err)
	}
	within(t, sink, KindStatsReset, "pg_stat_statements", "")

	db.Exec(t, `SELECT pg_stat_reset()`)
	ev := within(t, sink, KindStatsReset, "pg_stat_database", "")
	if ev.Database != db.Name {
		t.Errorf("database: got %q, want %q", ev.Database, db.Name)
	}
}

func TestPublicationOfSensitiveTable(t *testing.T) {
	db := pgtest.NewDatabase(t)
	seed(t, db)
	sink := start(t, db)

	db.Exec(t, `CREATE PUBLICATION watch_orders FOR TABLE public.orders`)
	db.Exec(t, `CREATE PUBLICATION pgtripwire_own FOR TABLE public.users`)
	db.Exec(t, `CREATE PUBLICATION watch_leak FOR TABLE public.orders`)
	db.Exec(t, `ALTER PUBLICATION watch_leak ADD TABLE public.users`)
	ev := within(t, sink, KindPublicationSensitive, "watch_leak", "")
	if ev.Relation != "public.users" || !slices.Equal(ev.SensitiveRead, []string{"email", "password_hash", "username"}) {
		t.Errorf("got relation %q columns %v, want public.users with its sensitive columns", ev.Relation, ev.SensitiveRead)
	}
	sink.WaitCalls(t, 2)
	for _, e := range sink.Events() {
		if e.Kind == KindPublicationSensitive && e.Object != "watch_leak" {
			t.Errorf("publication reported that is ours or publishes nothing sensitive: %+v", e)
		}
	}
}

func TestSettingsTheDetectorDependsOn(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, "watch_quiet")
	sink := start(t, db)

	// Per role: the statements of this role would no longer be counted.
	db.Exec(t, `ALTER ROLE watch_quiet SET pg_stat_statements.track = 'none'`)
	cleanupExec(t, db, `ALTER ROLE watch_quiet RESET ALL`)
	within(t, sink, KindSettingChanged, "pg_stat_statements.track", "watch_quiet")

	// Server-wide, waiting for a restart: reported before the restart blinds us.
	db.Exec(t, `ALTER SYSTEM SET track_activity_query_size = 100`)
	cleanupExec(t, db, `SELECT pg_reload_conf()`) // cleanups run last first
	cleanupExec(t, db, `ALTER SYSTEM RESET track_activity_query_size`)
	db.Exec(t, `SELECT pg_reload_conf()`)
	within(t, sink, KindSettingChanged, "track_activity_query_size", "")

	// Server-wide and reloadable: the value itself changes at the reload. The source
	// reads pg_settings only when the configuration was reloaded: a missed reload is a
	// missed change.
	db.Exec(t, `ALTER SYSTEM SET pg_stat_statements.track_utility = off`)
	cleanupExec(t, db, `ALTER SYSTEM RESET pg_stat_statements.track_utility`)
	sink.WaitCalls(t, 2)
	if _, ok := find(sink, KindSettingChanged, "pg_stat_statements.track_utility", ""); ok {
		t.Fatal("setting_changed before the reload that applies it")
	}
	db.Exec(t, `SELECT pg_reload_conf()`)
	within(t, sink, KindSettingChanged, "pg_stat_statements.track_utility", "")
}

func TestStatementsExtensionDropped(t *testing.T) {
	db := pgtest.NewDatabase(t)
	sink := start(t, db)
	// Polls after the first read pg_stat_statements_info in the same batch as the rest:
	// the drop must be found from there too.
	sink.WaitCalls(t, 2)
	db.Exec(t, `DROP EXTENSION pg_stat_statements`)
	within(t, sink, KindExtensionDropped, "pg_stat_statements", "")

	// And back: a reset of the new extension's statistics is reported like any other.
	db.Exec(t, `CREATE EXTENSION pg_stat_statements`)
	sink.WaitCalls(t, 2)
	db.Exec(t, `SELECT pg_stat_statements_reset()`)
	within(t, sink, KindStatsReset, "pg_stat_statements", "")
}

func TestStatementEvictions(t *testing.T) {
	srv := pgtest.NewServer(t, map[string]string{"pg_stat_statements.max": "100"})
	db := pgtest.NewDatabaseIn(t, srv)
	sink := start(t, db)

	// Flooding pg_stat_statements with distinct statements pushes older ones out.
	conn := db.Conn(t, "postgres")
	for i := range 300 {
		// Query ids ignore aliases and constants: vary the shape.
		if _, err := conn.Exec(t.Context(), "SELECT "+strings.Repeat("1, ", i)+"1"); err != nil {
			t.Fatal(err)
		}
	}
	ev := within(t, sink, KindStatementsEvicted, "pg_stat_statements", "")
	if ev.Rows <= 0 {
		t.Errorf("evictions: got %d, want > 0", ev.Rows)
	}
}

// After a failover the detector reads another server: its slots, statistics resets and
// evictions, and settings are its own, not changes, while what the cluster replicates
// (roles, memberships, publications, per-role settings) is still compared.
func TestAnotherServerIsABaselineForItsOwnState(t *testing.T) {
	s := New(Config{OwnSlots: []string{"pgtripwire"}}, nil, zap.NewNop(), prometheus.NewRegistry())
	old := &state{
		slots:         map[string]slot{"pgtripwire": {typ: "logical", active: true, backendType: "walsender", confirmed: "0/3000000"}},
		published:     map[[2]string]bool{},
		roles:         map[uint32]role{10: {name: "postgres", super: true}, 20: {name: "app"}},
		members:       map[[2]uint32]bool{},
		pgssInstalled: true, pgssReset: time.Unix(100, 0), pgssDealloc: 3, dbReset: time.Unix(50, 0),
		settings:     map[string]string{"pg_stat_statements.max": "5000"},
		roleSettings: map[roleSetting]string{},
	}
	promoted := &state{
		slots: map[string]slot{
			"pgtripwire":  {typ: "logical", confirmed: "0/5000060"},
			"subscriber1": {typ: "logical", confirmed: "0/4000000"}, // synchronised before the failover
		},
		published:     map[[2]string]bool{},
		roles:         map[uint32]role{10: {name: "postgres", super: true}, 20: {name: "app", super: true}},
		members:       map[[2]uint32]bool{},
		pgssInstalled: true, pgssReset: time.Unix(200, 0), pgssDealloc: 9, dbReset: time.Unix(60, 0),
		settings:     map[string]string{"pg_stat_statements.max": "10000"},
		roleSettings: map[roleSetting]string{},
	}
	s.prev = old
	s.Rebaseline()
	got := s.diff(time.Now(), s.rebased(old, promoted), promoted)
	if len(got) != 1 || got[0].Kind != KindRoleAttribute || got[0].Role != "app" || got[0].Object != "SUPERUSER" {
		t.Errorf("events: got %+v, want only app's SUPERUSER, granted during the switch", got)
	}
	if !s.rebase {
		t.Error("Rebaseline with a previous state: want the next poll to rebase")
	}
}
