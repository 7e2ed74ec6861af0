package source_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgtripwire/pgtripwire/detector/health"
	"github.com/pgtripwire/pgtripwire/detector/source"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
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
