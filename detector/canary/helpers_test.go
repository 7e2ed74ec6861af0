package canary_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	owner  = "canary_owner"  // owns public.users, as an application usually does
	reader = "canary_reader" // a non-superuser with SELECT on it
	domain = "mail.canary-test.example"
)

// newUsers makes public.users with n ordinary rows, owned by owner and readable by
// reader.
func newUsers(t testing.TB, n int) *pgtest.Database {
	t.Helper()
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, owner)
	db.CreateRole(t, reader)
	db.Exec(t, fmt.Sprintf(`
		CREATE TABLE public.users (
			id bigserial PRIMARY KEY,
			email text NOT NULL UNIQUE,
			username text NOT NULL,
			password_hash text NOT NULL,
			active boolean NOT NULL,
			created_at timestamptz NOT NULL DEFAULT now()
		);
		INSERT INTO public.users (email, username, password_hash, active)
		SELECT 'user' || g || '@example.com', 'user' || g,
			'$2a$11$' || rpad(md5(g::text), 53, 'x'), g %% 7 <> 0
		FROM generate_series(1, %d) g;
		ALTER TABLE public.users OWNER TO %s;
		GRANT SELECT ON public.users TO %s;
		ANALYZE public.users`, n, owner, reader))
	return db
}

func plant(t testing.TB, db *pgtest.Database, count int) *canary.Planted {
	t.Helper()
	conn := db.Conn(t, "postgres")
	p, err := canary.Plant(t.Context(), conn, canary.Options{Table: "public.users", Count: count, Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// slotSeq keeps slot names unique in the cluster, which all tests share.
var slotSeq atomic.Int64

// messages reads the canary messages of a database through a real logical slot
// (pgoutput with messages on, as the WAL source reads them).
type messages struct {
	t    testing.TB
	conn *pgx.Conn
	slot string
	// visits are every canary message read, decoded, in order.
	visits []canary.Visit
}

func newMessages(t testing.TB, db *pgtest.Database) *messages {
	t.Helper()
	m := &messages{t: t, conn: db.Conn(t, "postgres"), slot: fmt.Sprintf("canary_test_%d_%d", time.Now().UnixNano()%1e6, slotSeq.Add(1))}
	db.Exec(t, `CREATE PUBLICATION canary_test_pub`)
	if _, err := m.conn.Exec(t.Context(), `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, m.slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = m.conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, m.slot)
	})
	return m
}

// until returns the canary events decoded up to and including a marker message
// emitted now, waiting up to 5 s for it: everything emitted before the call is in.
// The marker is transactional, so its commit flushes the WAL before it.
func (m *messages) until() []model.Event {
	m.t.Helper()
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	if _, err := m.conn.Exec(m.t.Context(), `SELECT pg_logical_emit_message(true, 'test.marker', $1::text)`, marker); err != nil {
		m.t.Fatal(err)
	}
	var got []model.Event
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs, seen := m.read(marker)
		got = append(got, evs...)
		if seen {
			return got
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("marker message not decoded within 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls the slot until a canary event satisfying ok arrives, for at most
// 3 s (the acceptance bound for a page), and returns every canary event read.
func (m *messages) waitFor(ok func(model.Event) bool) ([]model.Event, bool) {
	m.t.Helper()
	var got []model.Event
	deadline := time.Now().Add(3 * time.Second)
	for {
		evs, _ := m.read("")
		got = append(got, evs...)
		for _, ev := range evs {
			if ok(ev) {
				return got, true
			}
		}
		if time.Now().After(deadline) {
			return got, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *messages) read(marker string) (evs []model.Event, sawMarker bool) {
	m.t.Helper()
	rows, err := m.conn.Query(m.t.Context(), `
		SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
			'proto_version', '1', 'publication_names', 'canary_test_pub', 'messages', 'true')`, m.slot)
	if err != nil {
		m.t.Fatal(err)
	}
	datas, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		m.t.Fatal(err)
	}
	for _, data := range datas {
		msg, err := pglogrepl.Parse(data)
		if err != nil {
			m.t.Fatalf("parse pgoutput message: %v", err)
		}
		lm, ok := msg.(*pglogrepl.LogicalDecodingMessage)
		if !ok {
			continue
		}
		if lm.Prefix == "test.marker" && string(lm.Content) == marker {
			sawMarker = true
		}
		v, ok, err := canary.Decode(lm.Prefix, lm.Content)
		if err != nil {
			m.t.Fatalf("decode %s message %q: %v", lm.Prefix, lm.Content, err)
		}
		if ok {
			if lm.Transactional {
				m.t.Errorf("canary message is transactional: it would be lost with a rolled-back read")
			}
			evs = append(evs, v.Event)
			m.visits = append(m.visits, v)
		}
	}
	return evs, sawMarker
}

func scalar[T any](t testing.TB, conn *pgx.Conn, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := conn.QueryRow(t.Context(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func describe(evs []model.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  %s %s role=%s pid=%d app=%q addr=%q", ev.Kind, ev.Object, ev.Role, ev.PID, ev.Application, ev.ClientAddr)
	}
	if b.Len() == 0 {
		return " none"
	}
	return b.String()
}
