package generate

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
)

// Symbol is the profile the simulator gives one ticker.
type Symbol struct {
	Name   string  // ticker, matching ^[A-Z][A-Z0-9.-]{0,11}$
	Price  float64 // starting price in dollars
	Vol    float64 // annualised volatility of log returns, e.g. 0.30
	Beta   float64 // loading on the common market factor
	Spread float64 // typical bid/ask spread in basis points of the price
}

// simSymbolRule is the naming rule in words, for error messages.
const simSymbolRule = "must match ^[A-Z][A-Z0-9.-]{0,11}$ (an upper-case letter, then at most 11 of A-Z, 0-9, '.', '-')"

// simDefaultUniverse holds large, liquid US names with prices, volatilities
// and betas of the order seen around late 2026. The numbers only have to be
// plausible: they set the scale of moves a detector downstream will see.
var simDefaultUniverse = [...]Symbol{
	{"AAPL", 270, 0.26, 1.10, 1.0},
	{"MSFT", 510, 0.24, 1.05, 1.0},
	{"NVDA", 195, 0.48, 1.70, 1.5},
	{"AMZN", 240, 0.32, 1.25, 1.2},
	{"GOOGL", 290, 0.30, 1.10, 1.2},
	{"META", 720, 0.36, 1.30, 1.5},
	{"TSLA", 430, 0.58, 1.90, 2.0},
	{"AVGO", 370, 0.46, 1.50, 2.0},
	{"BRK.B", 495, 0.17, 0.85, 1.5},
	{"JPM", 315, 0.23, 1.05, 1.2},
	{"V", 345, 0.20, 0.90, 1.2},
	{"MA", 575, 0.21, 0.95, 1.5},
	{"UNH", 340, 0.34, 0.65, 2.0},
	{"LLY", 900, 0.30, 0.60, 2.0},
	{"JNJ", 195, 0.16, 0.50, 1.5},
	{"XOM", 118, 0.24, 0.70, 1.5},
	{"WMT", 105, 0.19, 0.60, 1.5},
	{"PG", 150, 0.16, 0.45, 1.5},
	{"HD", 385, 0.23, 1.00, 1.5},
	{"KO", 70, 0.15, 0.55, 1.8},
	{"PEP", 150, 0.18, 0.55, 1.5},
	{"COST", 930, 0.21, 0.80, 2.0},
	{"NFLX", 112, 0.36, 1.20, 2.5},
	{"AMD", 245, 0.52, 1.80, 2.0},
	{"ORCL", 245, 0.45, 1.35, 2.5},
	{"CRM", 255, 0.34, 1.20, 2.0},
	{"ADBE", 345, 0.33, 1.15, 2.0},
	{"INTC", 38, 0.48, 1.30, 3.0},
	{"BAC", 53, 0.25, 1.15, 2.0},
	{"PLTR", 185, 0.65, 2.00, 3.0},
}

// DefaultUniverse returns the built-in symbols. The slice is a fresh copy, so
// callers may change it.
func DefaultUniverse() []Symbol {
	out := make([]Symbol, len(simDefaultUniverse))
	copy(out, simDefaultUniverse[:])
	return out
}

// LookupSymbols turns ticker names (as given to a --symbols flag) into
// profiles. Known tickers get their built-in profile; any other valid name
// gets a plausible profile derived from a hash of the name, so the same name
// always simulates the same way. Surrounding spaces are ignored. An invalid
// or repeated name is an error naming it.
func LookupSymbols(names []string) ([]Symbol, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("no symbols given")
	}
	out := make([]Symbol, 0, len(names))
	seen := make(map[string]bool, len(names))
	for _, raw := range names {
		name := strings.TrimSpace(raw)
		if !simValidName(name) {
			return nil, fmt.Errorf("symbol %q: %s", name, simSymbolRule)
		}
		if seen[name] {
			return nil, fmt.Errorf("symbol %q given twice", name)
		}
		seen[name] = true
		out = append(out, simLookupOne(name))
	}
	return out, nil
}

func simLookupOne(name string) Symbol {
	for _, s := range simDefaultUniverse {
		if s.Name == name {
			return s
		}
	}
	return simGeneratedProfile(name)
}

// simGeneratedProfile makes up a profile for a ticker we know nothing about:
// an unknown name is most likely a smaller company, so it gets a mid-range
// price, a higher volatility and a wider spread than the mega-caps.
func simGeneratedProfile(name string) Symbol {
	h := fnv.New64a()
	h.Write([]byte(name))
	sum := h.Sum64()
	rng := rand.New(rand.NewPCG(sum, sum^0x9e3779b97f4a7c15))
	price := math.Exp(math.Log(5) + rng.Float64()*(math.Log(500)-math.Log(5))) // log-uniform 5..500
	return Symbol{
		Name:   name,
		Price:  math.Round(price*100) / 100,
		Vol:    math.Round((0.20+0.40*rng.Float64())*1000) / 1000,
		Beta:   math.Round((0.6+1.0*rng.Float64())*100) / 100,
		Spread: math.Round((3+12*rng.Float64())*10) / 10,
	}
}

// simValidName reports whether name matches ^[A-Z][A-Z0-9.-]{0,11}$.
func simValidName(name string) bool {
	if len(name) == 0 || len(name) > 12 || name[0] < 'A' || name[0] > 'Z' {
		return false
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '-' {
			return false
		}
	}
	return true
}
