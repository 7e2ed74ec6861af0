package source

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func reader(role string, pid int32, since float64) Reader {
	return Reader{Relation: "public.users", PID: pid, Role: role, ClientAddr: "10.0.0.1", Application: "psql", Since: at(since)}
}

func roles(rs []Reader) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s/%d", r.Role, r.PID))
	}
	return out
}

func TestReadersSeen(t *testing.T) {
	r := NewReaders(0)
	// One sample a second. intruder's transaction holds the table from 1 s to 3 s;
	// app's lookup is caught once, at 5 s; a reader of another table at 2 s.
	other := reader("other", 9, 0)
	other.Relation = "public.orders"
	r.Note(at(0), nil)
	r.Note(at(1), []Reader{reader("intruder", 7, 0.9)})
	r.Note(at(2), []Reader{reader("intruder", 7, 0.9), other})
	r.Note(at(3), []Reader{reader("intruder", 7, 0.9)})
	r.Note(at(4), nil)
	r.Note(at(5), []Reader{reader("app", 3, 5)})
	r.Note(at(6), nil)

	for _, tc := range []struct {
		name     string
		from, to float64
		want     []string
	}{
		{"the whole time", 0, 6, []string{"app/3", "intruder/7"}},
		// Last seen at 3 s and not at 4 s: it ended between them, perhaps after 3.5 s.
		{"ended in the window's first interval", 3.5, 6, []string{"app/3", "intruder/7"}},
		{"ended before the window", 4, 6, []string{"app/3"}},
		{"first seen after the window", 0, 4.5, []string{"intruder/7"}},
		// Last seen at 5 s and not at 6 s: perhaps still holding it at 5.5 s.
		{"ended in the window's first interval, at the end", 5.5, 6, []string{"app/3"}},
		{"nobody", 6, 6, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := roles(r.Seen("public.users", at(tc.from), at(tc.to)))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Seen(%v s, %v s): got %v, want %v", tc.from, tc.to, got, tc.want)
			}
		})
	}
	got := r.Seen("public.users", at(0), at(6))
	if got[1].FirstSeen != at(1) || got[1].LastSeen != at(3) {
		t.Errorf("intruder seen from %v to %v, want 1 s to 3 s", got[1].FirstSeen.Sub(t0), got[1].LastSeen.Sub(t0))
	}
	if got := roles(r.Seen("public.orders", at(0), at(6))); fmt.Sprint(got) != "[other/9]" {
		t.Errorf("readers of public.orders: got %v, want [other/9]", got)
	}
	var none *Readers
	if got := none.Seen("public.users", at(0), at(6)); got != nil {
		t.Errorf("nil Readers: got %v, want nothing", got)
	}
}

// The same session in a new transaction is another reader: a pooled connection seen
// an hour ago did not hold the table in between.
func TestReadersTellTransactionsApart(t *testing.T) {
	r := NewReaders(0)
	r.Note(at(0), []Reader{reader("app", 3, 0)})
	r.Note(at(1), nil)
	r.Note(at(60), []Reader{reader("app", 3, 59.5)})
	got := r.Seen("public.users", at(10), at(30))
	if len(got) != 0 {
		t.Errorf("got %v, want nobody: the session held the table before and after, not during", roles(got))
	}
	if n := r.Len(); n != 2 {
		t.Errorf("Len: got %d, want 2 transactions", n)
	}
}

func TestReadersForgetOldSightings(t *testing.T) {
	r := NewReaders(0)
	r.Note(at(0), []Reader{reader("old", 1, 0)})
	r.Note(at(1), nil)
	r.Note(at(1).Add(ReadersRetention+readersPruneEvery), []Reader{reader("new", 2, 200)})
	if got := roles(r.Seen("public.users", at(0), at(1000))); fmt.Sprint(got) != "[new/2]" {
		t.Errorf("got %v, want only the reader seen within the retention", got)
	}
	if n := r.Len(); n != 1 {
		t.Errorf("Len: got %d, want 1", n)
	}
}

func TestReadersBounded(t *testing.T) {
	r := NewReaders(100)
	for i := range 1000 {
		r.Note(at(float64(i)/100), []Reader{reader("app", int32(i), float64(i)/100)})
	}
	if n := r.Len(); n > 100 {
		t.Errorf("Len: got %d, want at most 100", n)
	}
	// The most recent are kept.
	got := r.Seen("public.users", at(9.99), at(9.99))
	if len(got) != 1 || got[0].PID != 999 {
		t.Errorf("got %v, want the last reader", roles(got))
	}
}

// A sample noted with an earlier time than the previous one (a clock stepped back)
// keeps the samples in order.
func TestReadersClockStepsBack(t *testing.T) {
	r := NewReaders(0)
	r.Note(at(10), []Reader{reader("a", 1, 9)})
	r.Note(at(5), nil)
	if got := roles(r.Seen("public.users", at(10), at(10))); fmt.Sprint(got) != "[a/1]" {
		t.Errorf("got %v, want [a/1]", got)
	}
}

func TestReadersConcurrent(t *testing.T) {
	r := NewReaders(0)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			r.Note(at(float64(i)), []Reader{reader("app", int32(i%7), float64(i))})
		}
	})
	wg.Go(func() {
		for i := range 200 {
			_ = r.Seen("public.users", at(float64(i)-12), at(float64(i)))
			_ = r.Len()
		}
	})
	wg.Wait()
}
