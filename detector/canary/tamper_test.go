package canary_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/pgtripwire/pgtripwire/detector/source"
	canarysrc "github.com/pgtripwire/pgtripwire/detector/source/canary"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
	"github.com/pgtripwire/pgtripwire/model"
)

const watcher = "canary_watch" // the detector's role: no superuser, no ownership

// tamperCheck is the tamper check running as the detector runs it.
type tamperCheck struct {
	sink *sourcetest.Recorder
	reg  *prometheus.Registry
}

// checks is the number of checks completed so far: the source's successful polls
// (pgtripwire_source_polls_total{source="canary"}).
func (c tamperCheck) checks(t *testing.T) float64 {
	t.Helper()
	families, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "pgtripwire_source_polls_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == canarysrc.Name {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// startSource runs the tamper check as watcher, at a 1 s interval, until t ends, and
// waits for its first successful check.
func startSource(t *testing.T, db *pgtest.Database) tamperCheck {
	t.Helper()
	db.CreateRole(t, watcher)
	db.Exec(t, `GRANT USAGE ON SCHEMA pgtripwire_canary TO `+watcher+`;
		GRANT SELECT ON pgtripwire_canary.planted TO `+watcher)
	cc, err := pgx.ParseConfig(db.DSN(watcher))
	if err != nil {
		t.Fatal(err)
	}
	c := tamperCheck{sink: &sourcetest.Recorder{}, reg: prometheus.NewRegistry()}
	src := canarysrc.New(canarysrc.Config{}, c.sink, zaptest.NewLogger(t), c.reg)
	h := sourcetest.Start(t, cc, c.reg, source.Polled{Name: canarysrc.Name, Poller: src, Interval: time.Second})
	sourcetest.WaitReady(t, h)
	return c
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
			c := startSource(t, db)
			if got := c.sink.Events(); len(got) > 0 {
				t.Fatalf("events before any change: %+v", got)
			}
			start := time.Now()
			db.Exec(t, tc.sql)
			match := func(ev model.Event) bool {
				return ev.Kind == tc.kind && ev.Object == tc.object && ev.Operation == tc.op
			}
			sourcetest.Eventually(t, 5*time.Second, "the tamper event", func() bool { return len(c.sink.Find(match)) > 0 })
			t.Logf("reported after %v", time.Since(start).Round(10*time.Millisecond))
			// Reported once, not at every check while it lasts.
			seen := c.checks(t)
			sourcetest.Eventually(t, 10*time.Second, "two more checks", func() bool { return c.checks(t) >= seen+2 })
			if got := len(c.sink.Find(match)); got != 1 {
				t.Errorf("reported %d times, want once", got)
			}
			for _, ev := range c.sink.Events() {
				if ev.Source != canarysrc.Name || ev.Relation != "public.users" || ev.Database != db.Name {
					t.Errorf("event %+v: want source canary about public.users in %s", ev, db.Name)
				}
			}
		})
	}
}

// On a server watched with many databases (Config.AbsentProbeEvery), a database
// without canaries is probed for the registry once in that time, not every poll; once
// canaries are planted, every poll checks them, and a tripwire disarmed is seen at the
// next one.
func TestAbsentRegistryIsProbedSparsely(t *testing.T) {
	t.Parallel()
	db := newUsers(t, 50)
	conn := db.Conn(t, "postgres")
	now := time.Unix(1_700_000_000, 0)
	reg := prometheus.NewRegistry()
	sink := &sourcetest.Recorder{}
	src := canarysrc.New(canarysrc.Config{NoFlush: true, AbsentProbeEvery: 10 * time.Second, Now: func() time.Time { return now }},
		sink, zaptest.NewLogger(t), reg)
	if err := src.Start(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	checks := func() float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "pgtripwire_canary_checks_total" {
				return f.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	poll := func(after time.Duration) {
		t.Helper()
		now = now.Add(after)
		if err := src.Poll(t.Context(), conn); err != nil {
			t.Fatal(err)
		}
	}
	poll(0)
	for range 9 {
		poll(time.Second)
	}
	if got := checks(); got != 1 {
		t.Fatalf("checks over 9 s without a registry: got %v, want 1 (the first)", got)
	}
	plant(t, db, 1)
	poll(time.Second) // 10 s after the first probe: it finds the registry
	poll(time.Second)
	if got := checks(); got != 3 {
		t.Fatalf("checks once planted: got %v, want 3 (one a poll from the probe that found the registry)", got)
	}
	db.Exec(t, `ALTER TABLE public.users DISABLE ROW LEVEL SECURITY`)
	poll(time.Second)
	if got := sink.Events(); len(got) != 1 || got[0].Object != canarysrc.ObjectRowSecurity {
		t.Errorf("got %+v, want the disabled row security at the next poll", got)
	}
}
