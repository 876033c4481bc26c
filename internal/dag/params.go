package dag

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Parameters are typed so that a trigger is checked when it is made: a
// misspelt name or a value that cannot be read is refused, naming the
// parameter, before any run or job exists. Checked only inside a task, it
// would be kept silently (a misspelt name) or fail the task, which retries
// it as if the database had been away.

// ParamType is the type of a DAG parameter: how a value, written as on the
// command line (--param name=value) or in the API, is read, and what it
// must look like.
type ParamType struct {
	name string
	// example completes "such as …" in errors: what a valid value looks
	// like.
	example string
	parse   func(string) (any, error)
	// compare orders two parsed values for Min and Max; nil for types
	// without bounds.
	compare func(a, b any) int
}

// The parameter types of the engine. A DAG may define text types of its
// own with TextType.
var (
	// Duration is a time.Duration written as Go writes one: 90s, 5m, 168h.
	Duration = ParamType{name: "duration", example: "90s, 5m or 168h",
		parse: func(s string) (any, error) { return time.ParseDuration(s) }, compare: compareAs[time.Duration]}
	// Integer is a whole number (int64).
	Integer = ParamType{name: "integer", example: "50000",
		parse: func(s string) (any, error) { return strconv.ParseInt(s, 10, 64) }, compare: compareAs[int64]}
	// Number is a finite float64.
	Number = ParamType{name: "number", example: "0.05", parse: parseNumber, compare: compareAs[float64]}
	// Boolean is true or false (also 1, 0, t, f as strconv.ParseBool reads).
	Boolean = ParamType{name: "boolean", example: "true or false",
		parse: func(s string) (any, error) { return strconv.ParseBool(s) }}
	// Date is a calendar date, YYYY-MM-DD; a task places it in a time zone
	// (Params.Date).
	Date = ParamType{name: "date", example: "2026-11-02", parse: parseDate,
		compare: func(a, b any) int { return a.(time.Time).Compare(b.(time.Time)) }}
	// Text is any text.
	Text = TextType("text", "AAPL", nil)
	// FilePath is the path of a file. The engine reads it as text; whoever
	// opens the file decides where it may lie.
	FilePath = TextType("file", "prices.csv", nil)
)

// TextType returns a text type named name (as "symbol") whose values must
// satisfy valid (nil: any text); example shows a valid one in errors, and
// may say the rule ("AAPL (1-12 of A-Z 0-9 . -, starting with a letter)").
func TextType(name, example string, valid func(string) bool) ParamType {
	return ParamType{name: name, example: example, parse: func(s string) (any, error) {
		if valid != nil && !valid(s) {
			return nil, errors.New("invalid")
		}
		return s, nil
	}}
}

// String is the type's name: "duration", "integer", "symbol".
func (t ParamType) String() string { return t.name }

func compareAs[T cmp.Ordered](a, b any) int { return cmp.Compare(a.(T), b.(T)) }

func parseNumber(s string) (any, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, errors.New("not a finite number")
	}
	return f, nil
}

func parseDate(s string) (any, error) {
	return time.Parse(time.DateOnly, s)
}

// Param declares one parameter of a DAG.
type Param struct {
	// Name is what --param name=value and the API's params give; letters,
	// digits and underscores.
	Name string
	Type ParamType
	// Default is the value a run takes unless its trigger gives one,
	// written as it would be given ("2s", "0.05"). Empty means none: the
	// parameter is then unset (Params.Has is false) unless given.
	Default string
	// Required parameters must be given (or have a Default): a trigger
	// without one is refused.
	Required bool
	// Min and Max bound the value, both included, written as values of the
	// type ("0", "1s"); empty means unbounded. Only integer, number,
	// duration and date parameters have bounds.
	Min, Max string
	// Doc says in a line what the parameter does, for dag list and the API.
	Doc string
}

// Describe is the parameter's type with its bounds, as in "integer ≥ 0",
// "number in [0, 1]" or "symbol, required".
func (p Param) Describe() string {
	s := p.Type.name
	switch {
	case p.Min != "" && p.Max != "":
		s += " in [" + p.Min + ", " + p.Max + "]"
	case p.Min != "":
		s += " ≥ " + p.Min
	case p.Max != "":
		s += " ≤ " + p.Max
	}
	if p.Required {
		s += ", required"
	}
	return s
}

// expect is what a valid value of p is, for errors: "a number in [0, 1]
// (such as 0.05)".
func (p Param) expect() string {
	d := p.Type.name
	switch {
	case p.Min != "" && p.Max != "":
		d += " in [" + p.Min + ", " + p.Max + "]"
	case p.Min != "":
		d += " ≥ " + p.Min
	case p.Max != "":
		d += " ≤ " + p.Max
	}
	article := "a "
	if strings.ContainsRune("aeiou", rune(d[0])) {
		article = "an "
	}
	return article + d + " (such as " + p.Type.example + ")"
}

// read parses text (already trimmed, not empty) as a value of p, within
// its bounds.
func (p Param) read(text string) (any, error) {
	v, err := p.Type.parse(text)
	if err != nil {
		return nil, err
	}
	for i, bound := range []string{p.Min, p.Max} {
		if bound == "" {
			continue
		}
		b, err := p.Type.parse(bound)
		if err != nil {
			return nil, fmt.Errorf("bound %q: %w", bound, err)
		}
		if c := p.Type.compare(v, b); (i == 0 && c < 0) || (i == 1 && c > 0) {
			return nil, errors.New("out of bounds")
		}
	}
	return v, nil
}

// checkDecl reports what is wrong with the declaration itself: a name that
// could not be given, a type or bounds that do not parse, a default outside
// them. planDAG calls it, so that a DAG with such a parameter is refused by
// New rather than failing its runs.
func (p Param) checkDecl() error {
	if p.Name == "" || strings.IndexFunc(p.Name, func(r rune) bool {
		return r != '_' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9')
	}) >= 0 {
		return fmt.Errorf("parameter %q: a name is letters, digits and underscores", p.Name)
	}
	if p.Type.parse == nil {
		return fmt.Errorf("parameter %s has no type", p.Name)
	}
	for _, bound := range []string{p.Min, p.Max} {
		if bound == "" {
			continue
		}
		if p.Type.compare == nil {
			return fmt.Errorf("parameter %s: a %s has no bounds", p.Name, p.Type.name)
		}
		if _, err := p.Type.parse(bound); err != nil {
			return fmt.Errorf("parameter %s: bound %q is not a %s", p.Name, bound, p.Type.name)
		}
	}
	if p.Min != "" && p.Max != "" {
		lo, _ := p.Type.parse(p.Min)
		hi, _ := p.Type.parse(p.Max)
		if p.Type.compare(lo, hi) > 0 {
			return fmt.Errorf("parameter %s: Min %s is above Max %s", p.Name, p.Min, p.Max)
		}
	}
	if d := strings.TrimSpace(p.Default); d != "" {
		if _, err := p.read(d); err != nil {
			return fmt.Errorf("parameter %s: default %q is not %s", p.Name, p.Default, p.expect())
		}
	}
	return nil
}

// ParamError is the error of parameters that a run of a DAG cannot take:
// an unknown name, a value that is not of its parameter's type or is out of
// its bounds, a required one missing, or values that do not go together.
// Its message names the parameter and says what a valid value is.
type ParamError struct {
	DAG   string // the DAG whose run was refused
	Param string // the parameter at fault
	// problem names the parameter and what is wrong with it; unknown marks
	// a name the DAG does not declare.
	problem string
	unknown bool
}

// Error is one line: `DAG backfill has no parameter "sybmol" (it has: …)`
// or `DAG retention: parameter retention="banana" is not a duration ≥ 1s
// (such as 90s, 5m or 168h)`.
func (e *ParamError) Error() string {
	switch {
	case e.DAG == "":
		return e.problem
	case e.unknown:
		return "DAG " + e.DAG + " " + e.problem
	default:
		return "DAG " + e.DAG + ": " + e.problem
	}
}

// BadParam is the error a DAG's Validate returns for a parameter whose
// value does not go with the others; the message should name it and its
// value, as in BadParam("to", "parameter to=%s is before from=%s", …).
func BadParam(name, format string, args ...any) error {
	return &ParamError{Param: name, problem: fmt.Sprintf(format, args...)}
}

// Params are a run's parameters: every parameter the DAG declares, with its
// value as given or defaulted, read as its type. A task reads them through
// the accessor of the parameter's type; reading an undeclared parameter,
// or one of another type, is a mistake in the DAG's code and panics (the
// engine turns a task's panic into a failed attempt naming it).
type Params struct {
	dag    string
	decl   map[string]Param
	values map[string]any    // the parameters that are set
	text   map[string]string // every declared parameter, "" when unset
	given  map[string]bool
}

// ParseParams checks the parameters given for a run of d — every name
// declared, every value (trimmed; empty means not given) of its type and
// within its bounds, the required ones present, then d.Validate — and
// returns them over d's defaults. Its error is a *ParamError naming the
// first parameter at fault.
func (d DAG) ParseParams(given map[string]string) (Params, error) {
	p := Params{dag: d.Name, decl: make(map[string]Param, len(d.Params)),
		values: map[string]any{}, text: make(map[string]string, len(d.Params)), given: map[string]bool{}}
	for _, dp := range d.Params {
		p.decl[dp.Name] = dp
	}
	for _, name := range slices.Sorted(maps.Keys(given)) {
		if _, ok := p.decl[name]; !ok {
			has := "it takes none"
			if len(d.Params) > 0 {
				has = "it has: " + strings.Join(d.paramNames(), ", ")
			}
			return Params{}, &ParamError{DAG: d.Name, Param: name, unknown: true,
				problem: fmt.Sprintf("has no parameter %q (%s)", name, has)}
		}
	}
	for _, dp := range d.Params {
		text, isGiven := strings.TrimSpace(given[dp.Name]), true
		if text == "" {
			text, isGiven = strings.TrimSpace(dp.Default), false
		}
		if text == "" {
			if dp.Required {
				return Params{}, &ParamError{DAG: d.Name, Param: dp.Name,
					problem: fmt.Sprintf("parameter %s is required: give %s", dp.Name, dp.expect())}
			}
			p.text[dp.Name] = ""
			continue
		}
		v, err := dp.read(text)
		if err != nil {
			return Params{}, &ParamError{DAG: d.Name, Param: dp.Name,
				problem: fmt.Sprintf("parameter %s=%q is not %s", dp.Name, text, dp.expect())}
		}
		p.values[dp.Name], p.text[dp.Name], p.given[dp.Name] = v, text, isGiven
	}
	if d.Validate != nil {
		if err := d.Validate(p); err != nil {
			var pe *ParamError
			if !errors.As(err, &pe) {
				pe = &ParamError{problem: err.Error()}
			}
			pe.DAG = d.Name
			return Params{}, pe
		}
	}
	return p, nil
}

// Defaults returns every declared parameter's default, "" for none.
func (d DAG) Defaults() map[string]string {
	m := make(map[string]string, len(d.Params))
	for _, p := range d.Params {
		m[p.Name] = p.Default
	}
	return m
}

// Param returns the declaration of the parameter name.
func (d DAG) Param(name string) (Param, bool) {
	i := slices.IndexFunc(d.Params, func(p Param) bool { return p.Name == name })
	if i < 0 {
		return Param{}, false
	}
	return d.Params[i], true
}

// paramNames lists the declared names in order.
func (d DAG) paramNames() []string {
	names := make([]string, len(d.Params))
	for i, p := range d.Params {
		names[i] = p.Name
	}
	return names
}

// get returns the value of name, which must be declared as one of types.
func (p Params) get(name string, types ...string) (any, bool) {
	dp, ok := p.decl[name]
	if !ok {
		panic(fmt.Sprintf("dag: DAG %s reads parameter %q, which it does not declare", p.dag, name))
	}
	if len(types) > 0 && !slices.Contains(types, dp.Type.name) {
		panic(fmt.Sprintf("dag: DAG %s reads parameter %s as %s, but declares it %s", p.dag, name, strings.Join(types, " or "), dp.Type.name))
	}
	v, ok := p.values[name]
	return v, ok
}

// Has reports whether name is set: given, or with a default.
func (p Params) Has(name string) bool {
	_, ok := p.get(name)
	return ok
}

// Given reports whether the run's trigger gave name (rather than its
// default applying).
func (p Params) Given(name string) bool {
	p.get(name)
	return p.given[name]
}

// Duration is the value of a duration parameter; zero when unset.
func (p Params) Duration(name string) time.Duration {
	v, _ := p.get(name, Duration.name)
	d, _ := v.(time.Duration)
	return d
}

// Int is the value of an integer parameter; zero when unset.
func (p Params) Int(name string) int64 {
	v, _ := p.get(name, Integer.name)
	n, _ := v.(int64)
	return n
}

// Float is the value of a number or integer parameter; zero when unset.
func (p Params) Float(name string) float64 {
	switch v, _ := p.get(name, Number.name, Integer.name); v := v.(type) {
	case float64:
		return v
	case int64:
		return float64(v)
	}
	return 0
}

// Bool is the value of a boolean parameter; false when unset.
func (p Params) Bool(name string) bool {
	v, _ := p.get(name, Boolean.name)
	b, _ := v.(bool)
	return b
}

// Date is the value of a date parameter as midnight of that date in loc,
// and whether it is set.
func (p Params) Date(name string, loc *time.Location) (time.Time, bool) {
	v, ok := p.get(name, Date.name)
	if !ok {
		return time.Time{}, false
	}
	y, m, d := v.(time.Time).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc), true
}

// Value is the value of a parameter of any type as its type reads it
// (time.Duration, int64, float64, bool, time.Time for a date, string), or
// nil when unset: for code that handles parameters alike, such as a table
// of checks passing some to its queries.
func (p Params) Value(name string) any {
	v, _ := p.get(name)
	return v
}

// String is the value of a parameter as written (trimmed), whatever its
// type: how text, file and symbol parameters are read. "" when unset.
func (p Params) String(name string) string {
	p.get(name)
	return p.text[name]
}

// Text returns every declared parameter as written, "" for unset ones: what
// a run records as the parameters it executes with.
func (p Params) Text() map[string]string { return maps.Clone(p.text) }
