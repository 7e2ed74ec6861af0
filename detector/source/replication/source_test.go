package replication_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/detector/source/replication"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

// watch runs the replication source as the detector builds it from its defaults (1 s
// interval), connected with dsn as the detector connects (application_name
// pgtripwire), with allowed as replication.allowed.
func watch(t *testing.T, dsn string, allowed ...source.ReplicationClient) (*sourcetest.Recorder, *health.Status) {
	t.Helper()
	conn, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn.RuntimeParams["application_name"] = "pgtripwire"
	sink, reg := &sourcetest.Recorder{}, prometheus.NewRegistry()
	part, err := replication.Definition.Settings().Build(source.Env{Name: replication.Name, Conn: conn, Sink: sink,
		Logger: zap.NewNop(), Registerer: reg, Declared: source.Declarations{Replication: allowed}})
	if err != nil {
		t.Fatal(err)
	}
	return sink, sourcetest.Start(t, conn, reg, source.Polled{Name: replication.Name, Poller: part.Poller, Interval: part.Interval})
}

// reported waits up to 10 s for n events about role's walsenders doing operation, and
// returns them, one per walsender.
func reported(t *testing.T, sink *sourcetest.Recorder, role, operation string, n int, c *client) []model.Event {
	t.Helper()
	var got []model.Event
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = sink.Find(func(e model.Event) bool { return e.Role == role && e.Operation == operation })
		if len(got) >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d %s events about %s within 10 s, want %d; %s", len(got), operation, role, n, c)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sink.WaitCalls(t, 2) // and no more of them
	if again := sink.Find(func(e model.Event) bool { return e.Role == role && e.Operation == operation }); len(again) != n {
		t.Fatalf("got %d events, want %d, one per walsender:\n%v", len(again), n, again)
	}
	for _, e := range got {
		if e.Source != replication.Name || e.Kind != replication.KindUnexpected || e.PID == 0 {
			t.Errorf("got %+v, want source %s, kind %s and the walsender's pid", e, replication.Name, replication.KindUnexpected)
		}
	}
	return got
}

// newDatabase makes a database in a cluster of the test's own: two base backups at once
// in one cluster checkpoint away the WAL each other's stream needs.
func newDatabase(t *testing.T) *pgtest.Database {
	t.Helper()
	return pgtest.NewDatabaseIn(t, pgtest.NewServer(t, nil))
}

// A base backup and a logical stream by a role nobody declared are reported, each
// walsender once, with who, from where and how.
func TestReportsWhoCopies(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	db.CreateRole(t, "repl_copier", "REPLICATION")
	sink, h := watch(t, db.SuperuserDSN(), source.ReplicationClient{Role: "repl_standby"})
	sourcetest.WaitReady(t, h)

	bb := baseBackup(t, db.Server, "repl_copier")
	// pg_basebackup's two connections: BASE_BACKUP, and the WAL stream beside it.
	for _, e := range reported(t, sink, "repl_copier", replication.OpBackup, 2, bb) {
		if e.ClientAddr != "127.0.0.1" || e.Application != "pg_basebackup" || !e.Complete || e.Database != "" {
			t.Errorf("got %+v, want the client 127.0.0.1, application pg_basebackup, complete, no database", e)
		}
	}

	rl := recvLogical(t, db, "repl_copier", "repl_exfil")
	e := reported(t, sink, "repl_copier", replication.OpLogical, 1, rl)[0]
	if e.ClientAddr != "local" || e.Application != "pg_recvlogical" || e.Object != "repl_exfil" || e.Database != db.Name {
		t.Errorf("got %+v, want a Unix-socket client, pg_recvlogical, slot repl_exfil of database %s", e, db.Name)
	}
	if ok, problems := h.Ready(); !ok {
		t.Errorf("a superuser detector is blind: %v", problems)
	}
}

// Without pg_read_all_stats the detector's role sees who replicates but not from where:
// the source says so in its health, still reports by role and application, and an
// allowed entry that names a network does not match a client it cannot see.
func TestBlindSpotWithoutReadAllStats(t *testing.T) {
	t.Parallel()
	db := newDatabase(t)
	db.CreateRole(t, "repl_watcher")
	db.CreateRole(t, "repl_blind_copier", "REPLICATION")
	sink, h := watch(t, db.DSN("repl_watcher"),
		source.ReplicationClient{Role: "repl_blind_copier", Network: netip.MustParsePrefix("127.0.0.1/32")})
	blind := func() string {
		ok, problems := h.Ready()
		if ok {
			return ""
		}
		return fmt.Sprint(problems)
	}
	sourcetest.Eventually(t, 10*time.Second, "a blind spot", func() bool { return strings.Contains(blind(), "pg_read_all_stats") })
	if got := blind(); !strings.Contains(got, "GRANT pg_monitor") {
		t.Errorf("got health %q, want it to say how to fix it", got)
	}

	bb := baseBackup(t, db.Server, "repl_blind_copier")
	for _, e := range reported(t, sink, "repl_blind_copier", replication.OpBackup, 2, bb) {
		if e.ClientAddr != "" || e.Application != "pg_basebackup" || e.Complete {
			t.Errorf("got %+v, want no client address, application pg_basebackup, incomplete", e)
		}
	}

	db.Exec(t, `GRANT pg_monitor TO repl_watcher`)
	sourcetest.Eventually(t, 10*time.Second, "the blind spot to clear after GRANT pg_monitor", func() bool { return blind() == "" })
}
