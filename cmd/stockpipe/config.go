package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/stockpipe/stockpipe/internal/datadir"
)

// otherFlags maps every flag name the other commands define to whether it is
// a boolean flag, and lists the commands that define it. config takes a
// command's flags on its own command line, so its flag set must know them
// all before it knows which command is meant. It is filled once by init
// because configCommand is itself one of commands(): building it from there
// would recurse.
var otherFlags map[string]*flagKind

type flagKind struct {
	isBool bool
	cmds   []string
}

func init() {
	otherFlags = map[string]*flagKind{}
	for _, c := range commands() {
		if c.name == "config" {
			continue
		}
		c.fs.VisitAll(func(f *flag.Flag) {
			k := otherFlags[f.Name]
			if k == nil {
				k = &flagKind{}
				otherFlags[f.Name] = k
			}
			k.isBool = k.isBool || isBoolFlag(f)
			k.cmds = append(k.cmds, c.name)
		})
	}
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// passedFlag is a flag given to config for the command it shows.
type passedFlag struct{ name, value string }

// recorder is a flag of another command on config's command line: it keeps
// the value, in order, to hand to that command's own parser.
type recorder struct {
	name   string
	isBool bool
	into   *[]passedFlag
}

func (r *recorder) String() string { return "" }
func (r *recorder) Set(v string) error {
	*r.into = append(*r.into, passedFlag{r.name, v})
	return nil
}
func (r *recorder) IsBoolFlag() bool { return r.isBool }

// secretFlags hold credentials; config never prints their values.
var secretFlags = map[string]bool{"kafka-password": true, "auth-token": true, "key": true, "secret": true, "token": true}

// configEntry is one flag's effective value and where it came from.
type configEntry struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Source  string `json:"source"`        // "flag", "env", "default" or "data-dir" (the running up's)
	Env     string `json:"env,omitempty"` // the variable, when Source is "env"
	Default string `json:"default"`
	Secret  bool   `json:"secret,omitempty"` // Value and Default are masked
}

func configCommand() *command {
	c := newCommand("config", "print the configuration a command would run with and where each value comes from (secrets masked)",
		"STOCKPIPE_BROKERS=kafka:9092 stockpipe config process --batch-size 5000")
	c.usage = "[--json] COMMAND [COMMAND's flags and arguments]"
	c.positional = true
	asJSON := c.fs.Bool("json", false, "print JSON instead of a table (so COMMAND's own --json cannot be given here)")
	var passed []passedFlag
	names := make([]string, 0, len(otherFlags))
	for name := range otherFlags {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if c.fs.Lookup(name) != nil {
			continue // --log-level, --log-format and --json are config's own too
		}
		k := otherFlags[name]
		c.fs.Var(&recorder{name: name, isBool: k.isBool, into: &passed}, name,
			"passed to COMMAND (a flag of "+strings.Join(k.cmds, ", ")+")")
	}
	c.run = func(rc *runCtx) error {
		if len(c.args) == 0 {
			return errors.New("say which command: stockpipe config COMMAND [flags], e.g. stockpipe config process --batch-size 5000")
		}
		name := c.args[0]
		var target *command
		for _, t := range commands() {
			if t.name == name && name != "config" {
				target = t
			}
		}
		if target == nil {
			return fmt.Errorf("unknown command %q (run 'stockpipe --help' for the list)", name)
		}
		// Only what was on the command line goes to the command: its own
		// parser reads the environment, as it would when run for real.
		given := map[string]bool{}
		c.fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		var args []string
		for _, p := range passed {
			if given[p.name] {
				args = append(args, "--"+p.name+"="+p.value)
			}
		}
		for _, own := range []string{"log-level", "log-format"} {
			if given[own] && target.fs.Lookup(own) != nil {
				args = append(args, "--"+own+"="+c.fs.Lookup(own).Value.String())
			}
		}
		args = append(args, c.args[1:]...)
		if err := target.parse(args, io.Discard); err != nil {
			return err
		}
		entries := effectiveConfig(target)
		fromPeer(target, entries)
		if *asJSON {
			enc := json.NewEncoder(rc.stdout)
			enc.SetIndent("", "  ")
			enc.SetEscapeHTML(false)
			out := struct {
				Command string        `json:"command"`
				Args    []string      `json:"args"`
				Flags   []configEntry `json:"flags"`
			}{target.name, append([]string{}, target.args...), entries}
			return enc.Encode(out)
		}
		fmt.Fprintf(rc.stdout, "stockpipe %s: effective configuration (command line, then environment, then default)\n", target.name)
		if len(target.args) > 0 {
			fmt.Fprintf(rc.stdout, "arguments: %s\n", strings.Join(target.args, " "))
		}
		w := tabwriter.NewWriter(rc.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "FLAG\tVALUE\tSOURCE")
		for _, e := range entries {
			v := e.Value
			if v == "" {
				v = `""`
			}
			src := e.Source
			if e.Env != "" {
				src += " " + e.Env
			}
			fmt.Fprintf(w, "--%s\t%s\t%s\n", e.Name, v, src)
		}
		return w.Flush()
	}
	return c
}

// effectiveConfig lists a parsed command's flags with their sources, decided
// the way command.parse decides them: the command line, then STOCKPIPE_<FLAG>,
// then (for --database-url) DATABASE_URL, then the default.
func effectiveConfig(c *command) []configEntry {
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var out []configEntry
	c.fs.VisitAll(func(f *flag.Flag) {
		e := configEntry{Name: f.Name, Value: f.Value.String(), Source: "default", Default: f.DefValue}
		switch {
		case set[f.Name]:
			e.Source = "flag"
		default:
			if v := envSource(f.Name); v != "" {
				e.Source, e.Env = "env", v
			}
		}
		e.Value, e.Secret = maskFlag(f.Name, e.Value)
		e.Default, _ = maskFlag(f.Name, e.Default)
		out = append(out, e)
	})
	return out
}

// fromPeer shows, for a command that would take its database URL or
// brokers from the stockpipe up running on its --data-dir, those values,
// with the source "data-dir".
func fromPeer(c *command, entries []configEntry) {
	dd := c.fs.Lookup("data-dir")
	if dd == nil || c.name == "up" || c.name == "broker" || c.name == "loadtest" {
		return
	}
	ep, err := datadir.ReadEndpoints(dd.Value.String())
	if err != nil {
		return
	}
	for i := range entries {
		e := &entries[i]
		switch {
		case e.Value != "" && e.Value != `""`:
		case e.Name == "database-url" && ep.DatabaseURL != "":
			e.Value, e.Source = maskDatabaseURL(ep.DatabaseURL), "data-dir"
		case e.Name == "brokers" && len(ep.Brokers) > 0:
			e.Value, e.Source = strings.Join(ep.Brokers, ","), "data-dir"
		}
	}
}

// envSource names the environment variable that sets the flag, if one is
// set.
func envSource(flagName string) string {
	if _, ok := os.LookupEnv(envName(flagName)); ok {
		return envName(flagName)
	}
	if alias := envAliases[flagName]; alias != "" {
		if _, ok := os.LookupEnv(alias); ok {
			return alias
		}
	}
	return ""
}

// maskFlag hides credentials in a flag's value and reports whether it is a
// secret.
func maskFlag(name, v string) (string, bool) {
	switch {
	case secretFlags[name]:
		if v == "" {
			return "", true
		}
		return "***", true
	case name == "database-url":
		return maskDatabaseURL(v), true
	}
	return v, false
}

var dsnPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// maskDatabaseURL replaces the password in a PostgreSQL URL
// (postgres://user:***@host/db, also a password= query parameter) or
// keyword/value connection string (password=***).
func maskDatabaseURL(raw string) string {
	if raw == "" {
		return ""
	}
	if !strings.Contains(raw, "://") {
		return dsnPassword.ReplaceAllString(raw, "${1}***")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Unparseable: where a password would be is unknown, so hide it all.
		return "***"
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			k, _, _ := strings.Cut(p, "=")
			if key, err := url.QueryUnescape(k); err == nil && strings.EqualFold(key, "password") {
				parts[i] = k + "=***"
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	if u.User == nil {
		return u.String()
	}
	_, hasPass := u.User.Password()
	u.User = url.User(u.User.Username())
	s := u.String()
	if !hasPass {
		return s
	}
	// url.UserPassword would escape the asterisks; put them in by hand after
	// the (escaped) user name.
	prefix := u.Scheme + "://" + u.User.String()
	if !strings.HasPrefix(s, prefix) {
		return "***"
	}
	return prefix + ":***" + s[len(prefix):]
}
