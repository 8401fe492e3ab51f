// Package histo is a fixed-size, log-linear histogram of durations for
// load generators: recording costs an index computation and an increment,
// memory is constant however long the run, and every percentile it reports
// is within about 3% of the true value.
package histo

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the precision: each power of two is split into 2^subBits
// linear sub-buckets, so a bucket is at most 1/32 of its values wide.
const (
	subBits = 5
	sub     = 1 << subBits
	nb      = (64 - subBits) * sub
)

// A Histogram counts durations. The zero value is empty and ready to use.
// It is not safe for concurrent use: give each goroutine its own and Merge.
type Histogram struct {
	counts   [nb]uint64
	n        uint64
	sum      time.Duration
	min, max time.Duration
}

func index(v uint64) int {
	if v < 2*sub {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return (shift+1)*sub + int(v>>shift) - sub
}

// bounds returns the smallest and largest value bucket i holds.
func bounds(i int) (lo, hi uint64) {
	if i < 2*sub {
		return uint64(i), uint64(i)
	}
	shift := i/sub - 1
	m := uint64(i%sub + sub)
	return m << shift, (m+1)<<shift - 1
}

// Record adds one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	d = max(d, 0)
	h.counts[index(uint64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	h.max = max(h.max, d)
	h.n++
	h.sum += d
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of durations recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Min and Max return the exact extremes; Mean the exact mean.
func (h *Histogram) Min() time.Duration { return h.min }
func (h *Histogram) Max() time.Duration { return h.max }
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Quantile returns the q-quantile (0 ≤ q ≤ 1): the upper bound of the
// bucket holding it, clamped to the exact min and max.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bounds(i)
			return min(max(time.Duration(hi), h.min), h.max)
		}
	}
	return h.max
}

// A Bar is one row of a printed histogram: the count of durations in
// [Lo, Hi).
type Bar struct {
	Lo, Hi time.Duration
	Count  uint64
}

// Bars splits [Min, Max] into at most n rows of equal ratio (log scale),
// the way latency is best read, and counts each.
func (h *Histogram) Bars(n int) []Bar {
	if h.n == 0 || n < 1 {
		return nil
	}
	lo, hi := float64(max(h.min, 1)), float64(h.max)+1
	if hi/lo < 1.01 {
		return []Bar{{h.min, h.max, h.n}}
	}
	ratio := math.Pow(hi/lo, 1/float64(n))
	bars := make([]Bar, n)
	edge := lo
	for i := range bars {
		next := edge * ratio
		bars[i] = Bar{Lo: time.Duration(edge), Hi: time.Duration(next)}
		edge = next
	}
	bars[0].Lo = h.min
	bars[n-1].Hi = h.max
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		l, u := bounds(i)
		v := float64(l+u) / 2
		j := 0
		for j < n-1 && v >= float64(bars[j].Hi) {
			j++
		}
		bars[j].Count += c
	}
	return bars
}
