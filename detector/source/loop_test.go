package source_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
	"github.com/pgtripwire/pgtripwire/internal/testkit/sourcetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// timedPoller records when it was polled.
type timedPoller struct {
	mu    sync.Mutex
	polls []time.Time
}

func (p *timedPoller) Start(context.Context, *pgx.Conn) error { return nil }

func (p *timedPoller) Poll(context.Context, *pgx.Conn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.polls = append(p.polls, time.Now())
	return nil
}

func (p *timedPoller) times() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.polls...)
}

// Aligned loops, started at different moments, poll on the same multiples of their
// interval of the wall clock: the loops of a hundred databases wake together.
func TestAlignedLoopsPollTogether(t *testing.T) {
	db := pgtest.NewDatabase(t)
	cc, err := pgx.ParseConfig(db.SuperuserDSN())
	if err != nil {
		t.Fatal(err)
	}
	const interval = time.Second
	reg := prometheus.NewRegistry()
	h, m := health.New(reg), source.NewMetrics(reg)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	var pollers []*timedPoller
	for i := range 2 {
		p := &timedPoller{}
		pollers = append(pollers, p)
		name := []string{"first", "second"}[i]
		h.Register(name)
		l := &source.Loop{Conn: cc, Pollers: []source.Polled{{Name: name, Poller: p, Interval: interval}},
			Health: h, Metrics: m, Logger: zap.NewNop(), Aligned: true}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = l.Run(ctx)
		}()
		time.Sleep(interval * 3 / 10) // the second starts 300 ms into the first's second
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(pollers[0].times()) < 4 || len(pollers[1].times()) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("polls after 10 s: %d and %d, want 4 each", len(pollers[0].times()), len(pollers[1].times()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Started 300 ms apart, they poll together: the same offset into each second, near
	// its start (a loaded machine delays a wake-up, not by a third of a second).
	offset := func(at time.Time) time.Duration { return at.Sub(at.Truncate(interval)) }
	for n := 1; n < 4; n++ {
		a, b := offset(pollers[0].times()[n]), offset(pollers[1].times()[n])
		if d := (a - b).Abs(); d > 150*time.Millisecond || a > 250*time.Millisecond || b > 250*time.Millisecond {
			t.Errorf("poll %d: %s and %s into the second, want both near its start and together", n, a, b)
		}
	}
}

// rebasePoller records its sessions and the rebaselines the Loop asked for.
type rebasePoller struct {
	mu          sync.Mutex
	pids        []uint32 // one per Start
	rebaselines int
}

func (p *rebasePoller) Start(_ context.Context, conn *pgx.Conn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pids = append(p.pids, conn.PgConn().PID())
	return nil
}

func (p *rebasePoller) Poll(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `SELECT 1`)
	return err
}

func (p *rebasePoller) Rebaseline() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rebaselines++
}

func (p *rebasePoller) state() (sessions, rebaselines int, pid uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pids), p.rebaselines, p.pids[len(p.pids)-1]
}

// A multi-host DSN reaches the promoted standby after a failover: the Loop tells its
// pollers to count from a new baseline then, and not when it reconnects to the same
// server.
func TestLoopRebaselinesOnAnotherServer(t *testing.T) {
	t.Parallel()
	primary := pgtest.NewServer(t, nil)
	standby := pgtest.NewStandby(t, primary)
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=%s,%s port=%d,%d user=postgres dbname=postgres sslmode=disable "+
		"target_session_attrs=read-write", primary.Host(), standby.Host(), primary.Port(), standby.Port()))
	if err != nil {
		t.Fatal(err)
	}
	p := &rebasePoller{}
	reg := prometheus.NewRegistry()
	h := sourcetest.Start(t, cc, reg, source.Polled{Name: "counters", Poller: p, Interval: 100 * time.Millisecond})
	sourcetest.WaitReady(t, h)
	_, _, pid := p.state()
	if err := primary.Exec(t.Context(), "postgres", `SELECT pg_terminate_backend($1)`, int(pid)); err != nil {
		t.Fatal(err)
	}
	sourcetest.Eventually(t, 10*time.Second, "a reconnect to the same server", func() bool {
		sessions, _, _ := p.state()
		return sessions == 2
	})
	if _, n, _ := p.state(); n != 0 {
		t.Fatalf("rebaselines after a reconnect to the same server: got %d, want 0", n)
	}

	if err := standby.Promote(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := primary.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	sourcetest.Eventually(t, 20*time.Second, "a session on the promoted standby", func() bool {
		_, n, _ := p.state()
		return n > 0
	})
	if sessions, n, _ := p.state(); n != 1 {
		t.Errorf("rebaselines after %d sessions, the last on the promoted standby: got %d, want 1", sessions, n)
	}
	if got := sourceCounter(t, reg, "pgtripwire_source_server_changes_total", "counters"); got != 1 {
		t.Errorf("pgtripwire_source_server_changes_total{source=counters}: got %v, want 1", got)
	}
}

// sourceCounter is the value of a counter labelled source=name in reg, 0 when absent.
func sourceCounter(t *testing.T, reg *prometheus.Registry, metric, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == name {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
