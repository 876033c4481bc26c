package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// command is one subcommand: its flags, its help and what it runs.
type command struct {
	name    string
	summary string
	usage   string // arguments after the name, e.g. "[flags]"
	example string
	fs      *flag.FlagSet
	run     func(ctx *runCtx) error

	logLevel  string
	logFormat string

	positional bool     // takes arguments besides flags
	args       []string // those arguments
}

func newCommand(name, summary, example string) *command {
	c := &command{name: name, summary: summary, usage: "[flags]", example: example,
		fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	c.fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	return c
}

// envName is the environment variable that sets a flag: STOCKPIPE_ and the
// flag's name in upper case with '-' as '_'.
func envName(flagName string) string {
	return "STOCKPIPE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse reads args, then fills every flag not given on the command line from
// its environment variable. It returns errHelp after printing help.
func (c *command) parse(args []string, stderr io.Writer) error {
	c.fs.SetOutput(io.Discard)
	if c.positional {
		// Arguments may come before, between or after the flags.
		var flags []string
		for i := 0; i < len(args); i++ {
			a := args[i]
			switch {
			case a == "-h" || a == "--help" || a == "-help":
				flags = append(flags, a)
			case strings.HasPrefix(a, "-"):
				flags = append(flags, a)
				if !strings.Contains(a, "=") && i+1 < len(args) {
					if f := c.fs.Lookup(strings.TrimLeft(a, "-")); f != nil {
						if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !bf.IsBoolFlag() {
							i++
							flags = append(flags, args[i])
						}
					}
				}
			default:
				c.args = append(c.args, a)
			}
		}
		args = flags
	}
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.help(stderr)
			return errHelp
		}
		return fmt.Errorf("%s: %v (see 'stockpipe %s --help')", c.name, err, c.name)
	}
	if c.fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (see 'stockpipe %s --help')", c.name, c.fs.Arg(0), c.name)
	}
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	c.fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok && f.Name == "database-url" {
			v, ok = os.LookupEnv("DATABASE_URL")
		}
		if !ok {
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("%s: environment variable %s=%q: %v", c.name, envName(f.Name), v, e)
		}
	})
	return err
}

var errHelp = errors.New("help shown")

func (c *command) help(w io.Writer) {
	fmt.Fprintf(w, "stockpipe %s — %s\n\nUsage:\n  stockpipe %s %s\n\nFlags (each also settable as STOCKPIPE_<NAME>, e.g. --rate as STOCKPIPE_RATE):\n", c.name, c.summary, c.name, c.usage)
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	if c.example != "" {
		fmt.Fprintf(w, "\nExample:\n  %s\n", c.example)
	}
}

// logger builds the command's logger from --log-level and --log-format.
func (c *command) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", c.logFormat)
	}
}
