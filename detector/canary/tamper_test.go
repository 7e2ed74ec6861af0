package canary_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	canarysrc "github.com/pgtripwire/pgtripwire/detector/source/canary"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/model"
)

const watcher = "canary_watch" // the detector's role: no superuser, no ownership

// sink collects the events handed over by a source.
type sink struct {
	mu     sync.Mutex
	events []model.Event
}

func (s *sink) HandleEvents(_ context.Context, evs []model.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, evs...)
	return nil
}

func (s *sink) all() []model.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]model.Event(nil), s.events...)
}

// health records the last outcome reported.
type health struct {
	mu   sync.Mutex
	ok   int
	last error
}

func (h *health) Set(_ string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = err
	if err == nil {
		h.ok++
	}
}

func (h *health) checks() (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok, h.last
}

// startSource runs the tamper check as watcher, at a 1 s interval, until t ends, and
// waits for its first successful check.
func startSource(t *testing.T, db *pgtest.Database) (*sink, *health) {
	t.Helper()
	db.CreateRole(t, watcher)
	db.Exec(t, `GRANT USAGE ON SCHEMA pgtripwire_canary TO `+watcher+`;
		GRANT SELECT ON pgtripwire_canary.planted TO `+watcher)
	cc, err := pgx.ParseConfig(db.DSN(watcher))
	if err != nil {
		t.Fatal(err)
	}
	s, h := &sink{}, &health{}
	src := canarysrc.NewSource(canarysrc.Config{Conn: cc, Interval: time.Second}, s, h, zaptest.NewLogger(t), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: got %v, want context.Canceled", err)
		}
	})
	waitUntil(t, 10*time.Second, "the first check", func() bool { n, _ := h.checks(); return n > 0 })
	return s, h
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTamperCheck is acceptance 2 and its relatives: each way of disarming the
// tripwire is reported within a few seconds at a 1 s interval, once.
func TestTamperCheck(t *testing.T) {
	fn := `pgtripwire_canary.tripped(regclass, text)`
	for _, tc := range []struct {
		name             string
		sql              string
		kind, object, op string
	}{
		{"disable row security", `ALTER TABLE public.users DISABLE ROW LEVEL SECURITY`,
			canarysrc.KindTampered, canarysrc.ObjectRowSecurity, canarysrc.OperationDisabled},
		{"no force", `ALTER TABLE public.users NO FORCE ROW LEVEL SECURITY`,
			canarysrc.KindTampered, canarysrc.ObjectForceRowSecurity, canarysrc.OperationDisabled},
		{"drop policy", `DROP POLICY pgtripwire_canary ON public.users`,
			canarysrc.KindTampered, canarysrc.ObjectPolicy, canarysrc.OperationDropped},
		{"alter policy", `ALTER POLICY pgtripwire_canary ON public.users USING (true)`,
			canarysrc.KindTampered, canarysrc.ObjectPolicy, canarysrc.OperationAltered},
		{"policy for other roles only", `ALTER POLICY pgtripwire_canary ON public.users TO ` + owner,
			canarysrc.KindTampered, canarysrc.ObjectPolicy, canarysrc.OperationAltered},
		{"replace function", `CREATE OR REPLACE FUNCTION pgtripwire_canary.tripped(rel regclass, key text) RETURNS boolean
			LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS 'SELECT true'`,
			canarysrc.KindTampered, canarysrc.ObjectFunction, canarysrc.OperationAltered},
		{"function owner", `ALTER FUNCTION ` + fn + ` OWNER TO ` + owner,
			canarysrc.KindTampered, canarysrc.ObjectFunction, canarysrc.OperationAltered},
		{"drop function", `DROP FUNCTION ` + fn + ` CASCADE`,
			canarysrc.KindTampered, canarysrc.ObjectFunction, canarysrc.OperationDropped},
		{"drop permissive policy", `DROP POLICY pgtripwire_canary_allow ON public.users`,
			canarysrc.KindTampered, canarysrc.ObjectAllowPolicy, canarysrc.OperationDropped},
		{"drop registry", `DROP SCHEMA pgtripwire_canary CASCADE`,
			canarysrc.KindRemoved, canarysrc.ObjectRegistry, canarysrc.OperationDropped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newUsers(t, 50)
			plant(t, db, 1)
			s, h := startSource(t, db)
			if got := s.all(); len(got) > 0 {
				t.Fatalf("events before any change: %+v", got)
			}
			start := time.Now()
			db.Exec(t, tc.sql)
			match := func(ev model.Event) bool {
				return ev.Kind == tc.kind && ev.Object == tc.object && ev.Operation == tc.op
			}
			waitUntil(t, 5*time.Second, "the tamper event", func() bool {
				for _, ev := range s.all() {
					if match(ev) {
						return true
					}
				}
				return false
			})
			t.Logf("reported after %v", time.Since(start).Round(10*time.Millisecond))
			// Reported once, not at every check while it lasts.
			seen, _ := h.checks()
			waitUntil(t, 10*time.Second, "two more checks", func() bool { n, _ := h.checks(); return n >= seen+2 })
			if got := countMatching(s.all(), match); got != 1 {
				t.Errorf("reported %d times, want once", got)
			}
			for _, ev := range s.all() {
				if ev.Source != model.SourceCanary || ev.Relation != "public.users" || ev.Database != db.Name {
					t.Errorf("event %+v: want source canary about public.users in %s", ev, db.Name)
				}
			}
		})
	}
}

func countMatching(evs []model.Event, match func(model.Event) bool) int {
	n := 0
	for _, ev := range evs {
		if match(ev) {
			n++
		}
	}
	return n
}
