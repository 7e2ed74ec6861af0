package statements

import (
	"slices"
	"testing"
)

func e(query int64, calls, rows int64) entry {
	return entry{entryKey{userID: 10, dbID: 5, queryID: query, topLevel: true}, counters{calls: calls, rows: rows}}
}

func d(query int64, calls, rows int64) delta {
	return delta{entryKey{userID: 10, dbID: 5, queryID: query, topLevel: true}, counters{calls: calls, rows: rows}}
}

func TestTrackerDeltas(t *testing.T) {
	tests := []struct {
		name  string
		polls [][]entry
		want  []delta // deltas of the last poll
	}{
		{"first poll is a baseline", [][]entry{{e(1, 5, 500)}}, nil},
		{"growth", [][]entry{{e(1, 5, 500)}, {e(1, 7, 50500)}}, []delta{d(1, 2, 50000)}},
		{"unchanged entry yields nothing", [][]entry{{e(1, 5, 500)}, {e(1, 5, 500)}}, nil},
		{"new entry counts in full", [][]entry{{e(1, 5, 500)}, {e(1, 5, 500), e(2, 1, 50000)}}, []delta{d(2, 1, 50000)}},
		{"counter went down: reset or re-created entry, counted in full",
			[][]entry{{e(1, 500, 500)}, {e(1, 1, 50000)}}, []delta{d(1, 1, 50000)}},
		{"evicted, then back", [][]entry{{e(1, 5, 5000)}, {}, {e(1, 6, 6000)}}, []delta{d(1, 6, 6000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTracker()
			var got []delta
			for _, snap := range tt.polls {
				var commit func()
				got, commit = tr.observe(snap)
				commit()
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTrackerKeysIncludeRoleAndNesting(t *testing.T) {
	tr := newTracker()
	_, commit := tr.observe([]entry{e(1, 1, 1)})
	commit()
	other := e(1, 1, 1000)
	other.userID = 11
	nested := e(1, 1, 2000)
	nested.topLevel = false
	got, _ := tr.observe([]entry{e(1, 1, 1), other, nested})
	if len(got) != 2 {
		t.Fatalf("got %v, want the other role's and the nested entry's deltas", got)
	}
}

func TestTrackerWithoutCommitRepeats(t *testing.T) {
	tr := newTracker()
	_, commit := tr.observe([]entry{e(1, 1, 1)})
	commit()
	first, _ := tr.observe([]entry{e(1, 2, 5001)})
	again, commit := tr.observe([]entry{e(1, 2, 5001)})
	if !slices.Equal(first, again) || len(again) != 1 {
		t.Fatalf("got %v then %v, want the uncommitted delta again", first, again)
	}
	commit()
	if got, _ := tr.observe([]entry{e(1, 2, 5001)}); len(got) != 0 {
		t.Fatalf("got %v after commit, want nothing", got)
	}
}

func TestTrackerForget(t *testing.T) {
	tr := newTracker()
	_, commit := tr.observe([]entry{e(1, 100, 100000)})
	commit()
	tr.forget()
	got, _ := tr.observe([]entry{e(1, 200, 200000)})
	if !slices.Equal(got, []delta{d(1, 200, 200000)}) {
		t.Fatalf("got %v, want the whole counter after a reset", got)
	}
}

func TestFoldedRows(t *testing.T) {
	tests := []struct {
		name   string
		blocks int64
		size   tableSize
		want   int64
	}{
		{"a sequential scan of the whole table", 250, tableSize{tuples: 20000, pages: 250}, 20000},
		{"blocks of indexes and other tables never make more than the table", 900, tableSize{tuples: 20000, pages: 250}, 20000},
		{"an index range touching a few pages", 3, tableSize{tuples: 20000, pages: 250}, 240},
		{"a table never analyzed: its live tuples in its pages", 10, tableSize{tuples: 800, pages: 10}, 800},
		{"an empty table", 5, tableSize{}, 0},
		{"no blocks", 0, tableSize{tuples: 100, pages: 1}, 0},
		{"a table with tuples but no page yet counted", 2, tableSize{tuples: 50}, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := foldedRows(tt.blocks, tt.size); got != tt.want {
				t.Errorf("foldedRows(%d, %+v): got %d, want %d", tt.blocks, tt.size, got, tt.want)
			}
		})
	}
}
