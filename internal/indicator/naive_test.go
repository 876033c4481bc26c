package indicator

import "math"

// The naive indicators below recompute each value from the whole close
// history with the textbook formulas, sharing no code with the incremental
// ones, so that the two can check each other.

// naiveSMA is the mean of the last n closes of xs.
func naiveSMA(xs []float64, n int) (float64, bool) {
	if len(xs) < n {
		return 0, false
	}
	sum := 0.0
	for _, x := range xs[len(xs)-n:] {
		sum += x
	}
	return sum / float64(n), true
}

// naiveBollinger is the mean of the last n closes ± k population standard
// deviations of them, two passes.
func naiveBollinger(xs []float64, n int, k float64) (upper, lower float64, ok bool) {
	mean, ok := naiveSMA(xs, n)
	if !ok {
		return 0, 0, false
	}
	ss := 0.0
	for _, x := range xs[len(xs)-n:] {
		ss += (x - mean) * (x - mean)
	}
	sd := math.Sqrt(ss / float64(n))
	return mean + k*sd, mean - k*sd, true
}

// naiveEMA uses the closed form of the seeded recursion rather than the
// recursion itself: with a = 2/(n+1) and t = len(xs)−1,
// EMA = (1−a)^t·x_0 + Σ_{i=1..t} a·(1−a)^(t−i)·x_i.
func naiveEMA(xs []float64, n int) (float64, bool) {
	if len(xs) == 0 {
		return 0, false
	}
	a := 2 / float64(n+1)
	sum, p := 0.0, 1.0
	for i := len(xs) - 1; i >= 1; i-- {
		sum += a * p * xs[i]
		p *= 1 - a
	}
	return sum + p*xs[0], true
}

// naiveRSI follows Wilder's definition step by step from the first close.
func naiveRSI(xs []float64, n int) (float64, bool) {
	if len(xs) < n+1 {
		return 0, false
	}
	gains := make([]float64, len(xs)-1)
	losses := make([]float64, len(xs)-1)
	for i := 1; i < len(xs); i++ {
		gains[i-1] = math.Max(xs[i]-xs[i-1], 0)
		losses[i-1] = math.Max(xs[i-1]-xs[i], 0)
	}
	var ag, al float64
	for i := range n {
		ag += gains[i]
		al += losses[i]
	}
	ag /= float64(n)
	al /= float64(n)
	for i := n; i < len(gains); i++ {
		ag = (ag*float64(n-1) + gains[i]) / float64(n)
		al = (al*float64(n-1) + losses[i]) / float64(n)
	}
	switch {
	case al == 0 && ag == 0:
		return 50, true
	case al == 0:
		return 100, true
	}
	rs := ag / al
	return 100 - 100/(1+rs), true
}

// naiveValues is what a Set should hold after pushing xs.
func naiveValues(xs []float64) Values {
	var v Values
	if x, ok := naiveSMA(xs, 5); ok {
		v.SMA5, v.Has = x, v.Has|HasSMA5
	}
	if x, ok := naiveSMA(xs, 20); ok {
		v.SMA20, v.Has = x, v.Has|HasSMA20
	}
	if x, ok := naiveEMA(xs, 12); ok {
		v.EMA12, v.Has = x, v.Has|HasEMA12
	}
	if x, ok := naiveEMA(xs, 26); ok {
		v.EMA26, v.Has = x, v.Has|HasEMA26
	}
	if u, l, ok := naiveBollinger(xs, 20, 2); ok {
		v.BBUpper, v.BBLower, v.Has = u, l, v.Has|HasBB
	}
	if x, ok := naiveRSI(xs, 14); ok {
		v.RSI14, v.Has = x, v.Has|HasRSI14
	}
	return v
}
