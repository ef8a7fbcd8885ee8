package bench

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name          string
		in            []float64
		n             int
		med, min, max float64
	}{
		{name: "empty", in: nil, n: 0, med: nan, min: nan, max: nan},
		{name: "one", in: []float64{7}, n: 1, med: 7, min: 7, max: 7},
		{name: "odd, unsorted", in: []float64{5, 1, 3}, n: 3, med: 3, min: 1, max: 5},
		{name: "even: mean of the middle two", in: []float64{4, 1, 3, 10}, n: 4, med: 3.5, min: 1, max: 10},
		{name: "NaN left out", in: []float64{2, nan, 4}, n: 2, med: 3, min: 2, max: 4},
		{name: "all NaN", in: []float64{nan}, n: 0, med: nan, min: nan, max: nan},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := append([]float64(nil), tc.in...)
			s := Summarize(tc.in)
			eq := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
			if s.N != tc.n || !eq(s.Median, tc.med) || !eq(s.Min, tc.min) || !eq(s.Max, tc.max) {
				t.Errorf("Summarize(%v) = %+v, want N %d median %v min %v max %v", tc.in, s, tc.n, tc.med, tc.min, tc.max)
			}
			for i := range orig {
				if !eq(orig[i], tc.in[i]) {
					t.Fatalf("Summarize modified its input: %v -> %v", orig, tc.in)
				}
			}
		})
	}
}

func TestStatsOverlaps(t *testing.T) {
	a := Summarize([]float64{1, 2, 3})
	for _, tc := range []struct {
		b    []float64
		want bool
	}{
		{[]float64{3, 4}, true}, // touching counts as overlapping
		{[]float64{2.5}, true},
		{[]float64{0, 10}, true},
		{[]float64{3.1, 4}, false},
		{[]float64{-1, 0.9}, false},
	} {
		b := Summarize(tc.b)
		if got := a.Overlaps(b); got != tc.want || b.Overlaps(a) != tc.want {
			t.Errorf("[1,3] overlaps %v = %v, want %v (both ways)", tc.b, got, tc.want)
		}
	}
}

func TestMannWhitneyP(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []float64
		want float64
	}{
		// Every split of 6 values into 3+3 is one of C(6,3) = 20; the two
		// most extreme (all of a below or above b) give p = 2/20.
		{name: "3+3 disjoint", a: []float64{1, 2, 3}, b: []float64{4, 5, 6}, want: 0.1},
		{name: "3+3 disjoint, other way", a: []float64{14, 15, 16}, b: []float64{1, 2, 3}, want: 0.1},
		// C(8,4) = 70: p = 2/70.
		{name: "4+4 disjoint", a: []float64{1, 2, 3, 4}, b: []float64{5, 6, 7, 8}, want: 2.0 / 70},
		// Rank sum of a = 1+2+4 = 7 against a mean of 10.5: the splits
		// at least 3.5 from it are {1,2,3}, {1,2,4}, {3,5,6} and {4,5,6},
		// 4 of 20.
		{name: "3+3 one swap", a: []float64{1, 2, 4}, b: []float64{3, 5, 6}, want: 0.2},
		{name: "identical", a: []float64{1, 2, 3}, b: []float64{1, 2, 3}, want: 1},
		{name: "all tied", a: []float64{5, 5}, b: []float64{5, 5}, want: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MannWhitneyP(tc.a, tc.b); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("MannWhitneyP(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
		})
	}
	if p := MannWhitneyP(nil, []float64{1}); !math.IsNaN(p) {
		t.Errorf("empty sample: %v, want NaN", p)
	}
	if p := MannWhitneyP(make([]float64, 30), make([]float64, 30)); !math.IsNaN(p) {
		t.Errorf("60 values: %v, want NaN (too many to enumerate)", p)
	}
}
