package bench

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Percentile is the p-th percentile (0-100) of sorted values, linearly
// interpolated between the closest ranks (the "linear" method of NumPy and
// R type 7), so p50 of an even count is the mean of the middle two. NaN for
// no values.
func Percentile(sorted []float64, p float64) float64 {
	switch n := len(sorted); {
	case n == 0:
		return math.NaN()
	case n == 1 || p <= 0:
		return sorted[0]
	case p >= 100:
		return sorted[n-1]
	}
	rank := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(rank))
	frac := rank - float64(lo)
	if lo+1 >= len(sorted) {
		return sorted[lo]
	}
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}

// Stage is one measured operation: its latency figures in milliseconds, or
// why it was skipped.
type Stage struct {
	Name    string  `json:"name"`
	N       int     `json:"n"`
	P50     float64 `json:"p50_ms"`
	P95     float64 `json:"p95_ms"`
	P99     float64 `json:"p99_ms"`
	Min     float64 `json:"min_ms"`
	Max     float64 `json:"max_ms"`
	Mean    float64 `json:"mean_ms"`
	Skipped string  `json:"skipped,omitempty"`
	// SamplesMS are the raw measurements in the order taken.
	SamplesMS []float64 `json:"samples_ms,omitempty"`
}

// Ok reports whether the stage has figures.
func (s Stage) Ok() bool { return s.Skipped == "" && s.N > 0 }

// Summarize computes a stage's figures from its samples.
func Summarize(name string, samples []time.Duration) Stage {
	st := Stage{Name: name, N: len(samples)}
	if len(samples) == 0 {
		st.Skipped = "no samples"
		return st
	}
	ms := make([]float64, len(samples))
	sum := 0.0
	for i, d := range samples {
		ms[i] = float64(d) / float64(time.Millisecond)
		sum += ms[i]
	}
	st.SamplesMS = slices.Clone(ms)
	slices.Sort(ms)
	st.P50, st.P95, st.P99 = Percentile(ms, 50), Percentile(ms, 95), Percentile(ms, 99)
	st.Min, st.Max, st.Mean = ms[0], ms[len(ms)-1], sum/float64(len(ms))
	return st
}

// Skipped is a stage that could not be measured, with the reason.
func Skipped(name, why string) Stage { return Stage{Name: name, Skipped: why} }

// Ratio compares the p50 of two stages measured in the same run, which
// cancels much of a noisy machine's drift.
type Ratio struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Of    string  `json:"of"`
	Over  string  `json:"over"`
}

// RatioOf is a.P50 / b.P50, ok false when either stage lacks figures or b
// is zero.
func RatioOf(name string, a, b Stage) (Ratio, bool) {
	if !a.Ok() || !b.Ok() || b.P50 <= 0 {
		return Ratio{}, false
	}
	return Ratio{Name: name, Value: a.P50 / b.P50, Of: a.Name, Over: b.Name}, true
}

// FormatMS prints milliseconds with a precision that fits the magnitude.
func FormatMS(ms float64) string {
	switch {
	case math.IsNaN(ms):
		return "-"
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f s", ms/1000)
	}
}
