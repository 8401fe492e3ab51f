package benchutil

import "slices"

// Interleave runs measure(i) for each of n contenders, round after round,
// so that load from elsewhere on the machine falls on all of them alike.
// It returns the figures by contender, one per round.
func Interleave(n, rounds int, measure func(i int) (float64, error)) ([][]float64, error) {
	rates := make([][]float64, n)
	for range rounds {
		for i := range n {
			r, err := measure(i)
			if err != nil {
				return nil, err
			}
			rates[i] = append(rates[i], r)
		}
	}
	return rates, nil
}

// Median returns the median of v (0 for an empty v).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// MedianRatio is the median of a[i]/b[i]: rounds measured back to back.
func MedianRatio(a, b []float64) float64 {
	r := make([]float64, len(a))
	for i := range a {
		r[i] = a[i] / b[i]
	}
	return Median(r)
}
