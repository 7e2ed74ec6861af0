package engine

import (
	"math"
	"time"
)

// buckets is the number of buckets of a sliding window. An event counts from
// the moment it is added until its bucket leaves the window: between
// window×59/60 and window later (e.g. 9m50s to 10m for a 10m window).
const buckets = 60

// maxDistinct bounds the values a count_distinct group remembers; past it
// the count stays at maxDistinct (it never goes down because of the bound).
const maxDistinct = 1000

// window is the bucketed sliding aggregate of one group: constant memory
// whatever the event rate.
type window struct {
	head int64 // bucket number of the newest bucket; buckets are width-aligned since the Unix epoch
	vals [buckets]float64
	sum  float64 // running sum of vals, for count and sum
	// distinct maps each value of a count_distinct field to the bucket it
	// was last seen in.
	distinct map[string]int64
}

type aggFn int

const (
	aggCount aggFn = iota
	aggSum
	aggMax
	aggDistinct
)

func newWindow(fn aggFn) *window {
	w := &window{}
	if fn == aggMax {
		for i := range w.vals {
			w.vals[i] = math.Inf(-1)
		}
	}
	if fn == aggDistinct {
		w.distinct = map[string]int64{}
	}
	return w
}

func bucketOf(t time.Time, width time.Duration) int64 { return t.UnixNano() / int64(width) }

// advance moves the window's head to bucket b, emptying the buckets that
// leave the window. A time before the head (a clock step back) counts in
// the head bucket.
func (w *window) advance(b int64, fn aggFn) {
	if b <= w.head {
		return
	}
	empty := 0.0
	if fn == aggMax {
		empty = math.Inf(-1)
	}
	if b-w.head >= buckets {
		for i := range w.vals {
			w.vals[i] = empty
		}
		w.sum = 0
	} else {
		for x := w.head + 1; x <= b; x++ {
			i := x % buckets
			if fn != aggMax {
				w.sum -= w.vals[i]
			}
			w.vals[i] = empty
		}
	}
	w.head = b
}

func (w *window) add(b int64, fn aggFn, v float64, distinct string) {
	w.advance(b, fn)
	i := w.head % buckets
	switch fn {
	case aggCount, aggSum:
		w.vals[i] += v
		w.sum += v
	case aggMax:
		w.vals[i] = max(w.vals[i], v)
	case aggDistinct:
		if _, ok := w.distinct[distinct]; ok || len(w.distinct) < maxDistinct {
			w.distinct[distinct] = w.head
		}
	}
}

// value is the aggregate at bucket b.
func (w *window) value(b int64, fn aggFn) float64 {
	w.advance(b, fn)
	switch fn {
	case aggMax:
		m := math.Inf(-1)
		for _, v := range w.vals {
			m = max(m, v)
		}
		if math.IsInf(m, -1) {
			return 0
		}
		return m
	case aggDistinct:
		for k, at := range w.distinct {
			if at <= w.head-buckets {
				delete(w.distinct, k)
			}
		}
		return float64(len(w.distinct))
	}
	// Sums of integers stay exact below 2^53; guard against drift anyway.
	if w.sum < 1e-9 && w.sum > -1e-9 {
		w.sum = 0
	}
	return w.sum
}

// empty reports whether nothing is left in the window at bucket b.
func (w *window) empty(b int64, fn aggFn) bool {
	if fn == aggDistinct {
		return w.value(b, fn) == 0
	}
	w.advance(b, fn)
	for _, v := range w.vals {
		if (fn == aggMax && !math.IsInf(v, -1)) || (fn != aggMax && v != 0) {
			return false
		}
	}
	return true
}
