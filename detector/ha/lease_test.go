package ha_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/ha"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// stateDatabase is a database with the pgtripwire schema, made as setup makes it,
// and a role with only the rights setup grants the detector.
func stateDatabase(t *testing.T) (*pgtest.Database, *pgx.ConnConfig) {
	t.Helper()
	db := pgtest.NewDatabase(t)
	db.CreateRole(t, "ha_detector")
	for _, sql := range append(ha.SchemaSQL, ha.GrantSQL("ha_detector")...) {
		db.Exec(t, sql)
	}
	cfg, err := pgx.ParseConfig(db.DSN("ha_detector"))
	if err != nil {
		t.Fatal(err)
	}
	return db, cfg
}

type holding struct {
	mu     sync.Mutex
	held   *ha.Held
	ended  error // the work context's cause when it ended
	starts int
}

func (w *holding) work(ctx context.Context, h *ha.Held) error {
	w.mu.Lock()
	w.held, w.starts = h, w.starts+1
	w.mu.Unlock()
	<-ctx.Done()
	w.mu.Lock()
	w.held, w.ended = nil, context.Cause(ctx)
	w.mu.Unlock()
	return nil
}

// get returns the lease held now (nil when none), how many times it was taken,
// and why the work last ended.
func (w *holding) get() (held *ha.Held, starts int, ended error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.held, w.starts, w.ended
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two detectors on one target: one holds the lease, the other waits; when the
// holder's session ends (a killed process, a terminated backend), the holder's
// work stops at once and the other takes over within seconds, reading the state
// the first wrote through its lease.
func TestLeaseIsHeldByOneAndTakenOverWhenItsSessionEnds(t *testing.T) {
	db, cfg := stateDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	var a, b holding
	run := func(w *holding, holder string) {
		l := &ha.Lease{Target: "eu", Conn: cfg, Holder: holder, TryEvery: 200 * time.Millisecond, CheckEvery: 200 * time.Millisecond}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Run(ctx, w.work); !errors.Is(err, context.Canceled) {
				t.Errorf("Run(%s) = %v, want context.Canceled", holder, err)
			}
		}()
	}
	run(&a, "detector-a")
	waitFor(t, "a holds the lease", 10*time.Second, func() bool { h, _, _ := a.get(); return h != nil })
	run(&b, "detector-b")

	held, _, _ := a.get()
	saved := []byte(`{"rules":"learned by a"}`)
	if err := held.SaveRuleState(ctx, time.Now(), saved); err != nil {
		t.Fatal(err)
	}
	g := ha.ReplayGuard{SystemID: "7301", Timeline: 2, Handled: 0x3000060, HandledAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := held.SaveReplayGuard(ctx, time.Now(), "pgtripwire", g); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // b tries five times meanwhile
	if h, _, _ := b.get(); h != nil {
		t.Fatal("b holds the lease while a does")
	}

	// a's session ends as a kill -9 would end it.
	db.Exec(t, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND classid = 1885828215 AND objid = $1::oid AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		int64(uint32(ha.LockKey("eu"))))
	waitFor(t, "a's work stops (fencing)", 3*time.Second, func() bool { _, _, ended := a.get(); return ended != nil })
	if _, _, ended := a.get(); !errors.Is(ended, ha.ErrLost) {
		t.Errorf("a's work ended with %v, want ErrLost", ended)
	}
	waitFor(t, "a or b takes the lease over", 5*time.Second, func() bool {
		hb, _, _ := b.get()
		ha2, startsA, _ := a.get()
		return hb != nil || (ha2 != nil && startsA == 2)
	})
	next, _, _ := b.get()
	if next == nil {
		next, _, _ = a.get()
	}
	got, by, _, ok, err := next.LoadRuleState(ctx)
	if err != nil || !ok || string(got) != string(saved) || by != "detector-a" {
		t.Errorf("LoadRuleState = %q by %q, %v, %v; want %q by detector-a", got, by, ok, err, saved)
	}
	gotGuard, ok, err := next.LoadReplayGuard(ctx, "pgtripwire")
	if err != nil || !ok || gotGuard.Handled != g.Handled || !gotGuard.HandledAt.Equal(g.HandledAt) || gotGuard.Timeline != 2 {
		t.Errorf("LoadReplayGuard = %+v, %v, %v; want %+v", gotGuard, ok, err, g)
	}
	if _, ok, err := next.LoadReplayGuard(ctx, "other"); ok || err != nil {
		t.Errorf("LoadReplayGuard(other) = %v, %v; want nothing", ok, err)
	}
}

// The detector's role may read and write the state, and nothing more: it cannot
// delete it, nor create objects in the schema.
func TestStateRightsAreLeastPrivilege(t *testing.T) {
	_, cfg := stateDatabase(t)
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{
		`DELETE FROM pgtripwire.rule_state`,
		`TRUNCATE pgtripwire.replay_guard`,
		`CREATE TABLE pgtripwire.x (a int)`,
		`DROP TABLE pgtripwire.rule_state`,
	} {
		_, err := conn.Exec(context.Background(), sql)
		if err == nil || !strings.Contains(err.Error(), "permission denied") && !strings.Contains(err.Error(), "must be owner") {
			t.Errorf("%s as the detector: %v, want permission denied", sql, err)
		}
	}
}

// A lock on a standby says nothing about the primary, where another detector may hold
// the lease: a lease asked for on a standby is never taken.
func TestLeaseIsNeverTakenOnAStandby(t *testing.T) {
	primary := pgtest.NewServer(t, nil)
	standby := pgtest.NewStandby(t, primary)
	cfg, err := pgx.ParseConfig(standby.SuperuserDSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var w holding
	l := &ha.Lease{Target: "eu", Conn: cfg, TryEvery: 100 * time.Millisecond}
	if err := l.Run(ctx, w.work); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v, want the context's end", err)
	}
	if _, starts, _ := w.get(); starts != 0 {
		t.Errorf("the lease was taken %d times on a standby", starts)
	}
}
