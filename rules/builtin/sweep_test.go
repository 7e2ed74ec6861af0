package builtin

import (
	"github.com/prometheus/client_golang/prometheus/testutil"
	"testing"
	"time"

	"github.com/pgtripwire/pgtripwire/detector/alert"
	"github.com/pgtripwire/pgtripwire/detector/event"
)

func page(role string, rows, calls int64) event.Event {
	ev := dump(role, rows, calls)
	return ev
}

func newSweep() *Sweep { return NewSweep(100, 1000, 10_000, 10*time.Minute, 5*time.Minute, nil) }

func TestSweepFiresOnPagesThatAddUp(t *testing.T) {
	r := newSweep()
	t0 := time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)
	var fired []alert.Alert
	// 40 pages of 500 rows, 0.2 s apart (one poll may see several: here one each).
	for i := range 40 {
		fired = append(fired, r.Eval(t0.Add(time.Duration(i)*200*time.Millisecond), page("mallory", 500, 1))...)
	}
	if len(fired) != 1 {
		t.Fatalf("got %d transitions, want exactly one firing", len(fired))
	}
	a := fired[0]
	if a.Rule != SweepRuleName || a.Value != 10_000 || a.Labels["role"] != "mallory" ||
		a.Labels["table"] != "public.users" || a.Labels["columns"] != "email,password_hash,username" {
		t.Fatalf("got %+v, want a sweep alert for mallory's reads of public.users at 10,000 rows", a)
	}
	if got := r.Tick(t0.Add(time.Minute)); len(got) != 0 {
		t.Fatalf("got %v a minute later, want still firing", got)
	}
	got := r.Tick(t0.Add(8 * time.Second).Add(5 * time.Minute))
	if len(got) != 1 || got[0].State != alert.StateResolved || got[0].Value != 20_000 {
		t.Fatalf("got %v, want resolved after 5 quiet minutes with the total seen", got)
	}
}

// Once resolved, a sweep starts from zero: its old pages, still within the window, do
// not make the next page fire it again.
func TestSweepDoesNotRefireOnItsOwnPages(t *testing.T) {
	r := newSweep()
	t0 := time.Now()
	for i := range 25 {
		r.Eval(t0.Add(time.Duration(i)*time.Second), page("mallory", 500, 1))
	}
	if got := r.Tick(t0.Add(6 * time.Minute)); len(got) != 1 {
		t.Fatalf("got %v, want the sweep resolved", got)
	}
	if got := r.Eval(t0.Add(6*time.Minute+time.Second), page("mallory", 100, 1)); len(got) != 0 {
		t.Fatalf("got %v for one page after the resolution, want silence", got)
	}
}

func TestSweepStaysSilentOnApplicationTraffic(t *testing.T) {
	tests := []struct {
		name string
		ev   event.Event
		n    int
	}{
		{"login lookups, 200 per second for a minute", page("app", 200, 200), 60},
		{"an admin page listing 50 users every second", page("admin", 50, 1), 600},
		{"bulk reads are SensitiveBulkRead's", page("etl", 5000, 1), 10},
		{"references only", func() event.Event { e := page("app", 500, 1); e.SensitiveRead = nil; return e }(), 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newSweep()
			t0 := time.Now()
			for i := range tt.n {
				if got := r.Eval(t0.Add(time.Duration(i)*time.Second), tt.ev); len(got) != 0 {
					t.Fatalf("event %d: got %v, want silence", i, got)
				}
			}
		})
	}
}

func TestSweepWindowSlides(t *testing.T) {
	r := newSweep()
	t0 := time.Now()
	// 9,500 rows, then nothing for 11 minutes, then 1,000 more: never 10,000 within 10 m.
	for i := range 19 {
		r.Eval(t0.Add(time.Duration(i)*time.Second), page("eve", 500, 1))
	}
	for i := range 2 {
		if got := r.Eval(t0.Add(11*time.Minute+time.Duration(i)*time.Second), page("eve", 500, 1)); len(got) != 0 {
			t.Fatalf("got %v, want the old pages out of the window", got)
		}
	}
}

func TestSweepGroupsByRole(t *testing.T) {
	r := newSweep()
	t0 := time.Now()
	for i := range 19 {
		r.Eval(t0.Add(time.Duration(i)*time.Second), page("eve", 500, 1))
		if got := r.Eval(t0.Add(time.Duration(i)*time.Second), page("mallory", 500, 1)); len(got) != 0 {
			t.Fatalf("got %v, want two roles' pages counted apart", got)
		}
	}
}

func TestSweepMemoryIsBounded(t *testing.T) {
	r := newSweep()
	t0 := time.Now()
	for i := range maxSweepGroups + 50 {
		ev := page("r", 100, 1)
		ev.Role = "role" + string(rune('a'+i%26)) + string(rune('a'+(i/26)%26)) + string(rune('a'+(i/676)%26))
		r.Eval(t0.Add(time.Duration(i)*time.Millisecond), ev)
	}
	if got := testutil.ToFloat64(r.evicted); len(r.groups) > maxSweepGroups || got != 50 {
		t.Fatalf("got %d groups and %v evictions, want at most %d groups and 50 counted", len(r.groups), got, maxSweepGroups)
	}
}

func TestPackEvaluatesEveryRule(t *testing.T) {
	p := Pack{NewBulkRead(1000, time.Minute), newSweep()}
	if len(p.Rules()) != 2 {
		t.Fatalf("got rules %v, want both", p.Rules())
	}
	if got := p.Eval(time.Now(), dump("mallory", 50_000, 1)); len(got) != 1 || got[0].Rule != BulkReadRuleName {
		t.Fatalf("got %v, want only the bulk read for one big statement", got)
	}
}
