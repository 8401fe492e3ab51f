package histo

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestIndexBounds(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1} {
		i := index(v)
		lo, hi := bounds(i)
		if v < lo || v > hi {
			t.Errorf("index(%d) = %d with bounds [%d, %d]", v, i, lo, hi)
		}
		if hi-lo > lo/sub+1 {
			t.Errorf("bucket %d [%d, %d] wider than 1/%d", i, lo, hi, sub)
		}
		if i < prev {
			t.Errorf("index not monotonic at %d", v)
		}
		prev = i
	}
	// Buckets tile the line: each starts where the previous ended.
	for i := 1; i < nb; i++ {
		_, hi := bounds(i - 1)
		lo, _ := bounds(i)
		if lo != hi+1 {
			t.Fatalf("gap between buckets %d and %d: %d, %d", i-1, i, hi, lo)
		}
	}
}

func TestQuantiles(t *testing.T) {
	var h, a, b Histogram
	r := rand.New(rand.NewPCG(1, 2))
	var all []time.Duration
	for i := range 100000 {
		d := time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		all = append(all, d)
		h.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := all[int(q*float64(len(all)))-1]
		got := h.Quantile(q)
		if diff := float64(got-exact) / float64(exact); diff < -0.04 || diff > 0.04 {
			t.Errorf("p%v = %v, exact %v", q*100, got, exact)
		}
		if m := a.Quantile(q); m != got {
			t.Errorf("merged p%v = %v, want %v", q*100, m, got)
		}
	}
	if h.Max() != all[len(all)-1] || h.Min() != all[0] || h.Count() != 100000 {
		t.Errorf("min %v max %v count %d", h.Min(), h.Max(), h.Count())
	}
	var total uint64
	for _, bar := range h.Bars(10) {
		total += bar.Count
	}
	if total != h.Count() {
		t.Errorf("bars hold %d of %d", total, h.Count())
	}
}
