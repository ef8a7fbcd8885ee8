package bench

import (
	"cmp"
	"math"
	"slices"
)

// Stats summarises the values of one figure over the repeats of a run.
type Stats struct {
	// N is the number of values.
	N int
	// Median is the middle value, or the mean of the two middle values
	// when N is even. NaN when N is 0.
	Median float64
	// Min and Max are the extremes. NaN when N is 0.
	Min, Max float64
}

// Summarize returns the Stats of values (which it does not modify). NaN
// values are left out: a figure that could not be computed is not a
// figure.
func Summarize(values []float64) Stats {
	v := make([]float64, 0, len(values))
	for _, x := range values {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Stats{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return Stats{N: n, Median: med, Min: v[0], Max: v[n-1]}
}

// Overlaps reports whether the min-max ranges of s and o overlap.
func (s Stats) Overlaps(o Stats) bool {
	return s.Min <= o.Max && o.Min <= s.Max
}

// costMetrics are the metrics of which less is better: memory, latency,
// losses, CPU and retransmissions, as opposed to rates and counts of work
// done.
var costMetrics = []string{MetricRSSMiB, MetricRRMicros, MetricDroppedFrames, MetricCPUPerFrame, MetricRetrans}

// lowerIsBetter reports whether a smaller value of metric is an
// improvement.
func lowerIsBetter(metric string) bool { return slices.Contains(costMetrics, metric) }

// MannWhitneyP returns the two-sided p-value of the Mann-Whitney U test
// that a and b come from the same distribution, computed exactly from the
// distribution of U over every split of the pooled ranks (no normal
// approximation, which is poor at the handful of repeats a benchmark
// run has). Ties get mid-ranks, which makes the exact p-value slightly
// conservative. It returns NaN when either sample is empty or the pool is
// too large to enumerate (more than 40 values; use a larger test then).
//
// With 3 repeats on each side the smallest possible p is 0.1: three
// repeats can show that ranges do not overlap, but not significance at
// 5 %. Compare says so rather than hide it.
func MannWhitneyP(a, b []float64) float64 {
	n, m := len(a), len(b)
	if n == 0 || m == 0 || n+m > 40 {
		return math.NaN()
	}
	// Doubled mid-ranks keep everything in integers.
	type pooled struct {
		v     float64
		fromA bool
	}
	pool := make([]pooled, 0, n+m)
	for _, x := range a {
		pool = append(pool, pooled{x, true})
	}
	for _, x := range b {
		pool = append(pool, pooled{x, false})
	}
	slices.SortFunc(pool, func(x, y pooled) int { return cmp.Compare(x.v, y.v) })
	rank2 := make([]int, len(pool)) // 2 * mid-rank
	for i := 0; i < len(pool); {
		j := i
		for j < len(pool) && pool[j].v == pool[i].v {
			j++
		}
		// ranks i+1..j, mid-rank (i+1+j)/2, doubled i+1+j
		for k := i; k < j; k++ {
			rank2[k] = i + 1 + j
		}
		i = j
	}
	obs := 0 // doubled rank sum of a
	for i, p := range pool {
		if p.fromA {
			obs += rank2[i]
		}
	}
	// count[k][s]: the ways to choose k of the pooled values whose doubled
	// rank sum is s.
	maxSum := 0
	for _, r := range rank2 {
		maxSum += r
	}
	count := make([][]float64, n+1)
	for k := range count {
		count[k] = make([]float64, maxSum+1)
	}
	count[0][0] = 1
	for _, r := range rank2 {
		for k := n; k >= 1; k-- {
			for s := maxSum; s >= r; s-- {
				count[k][s] += count[k-1][s-r]
			}
		}
	}
	// The rank sum's distribution is symmetric about its mean: the
	// two-sided p is the mass at least as far from the mean as obs.
	mean2 := n * (n + m + 1) // doubled mean rank sum of a
	dev := abs(obs - mean2)
	var total, tail float64
	for s, c := range count[n] {
		if c == 0 {
			continue
		}
		total += c
		if abs(s-mean2) >= dev {
			tail += c
		}
	}
	return min(tail/total, 1)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
