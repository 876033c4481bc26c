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

// envAliases are the variables, besides STOCKPIPE_<NAME>, that set a flag:
// the ones the ecosystem already uses for the same value, which a user has
// set for other tools.
var envAliases = map[string]string{ //nolint:gosec // G101 takes these variable names for credentials
	"database-url": "DATABASE_URL",
	"key":          "APCA_API_KEY_ID",
	"secret":       "APCA_API_SECRET_KEY",
	"token":        "FINNHUB_TOKEN",
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
		return fmt.Errorf("%s: %w (see 'stockpipe %s --help')", c.name, err, c.name)
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
		if alias := envAliases[f.Name]; !ok && alias != "" {
			v, ok = os.LookupEnv(alias)
		}
		if !ok {
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = fmt.Errorf("%s: environment variable %s=%q: %w", c.name, envName(f.Name), v, e)
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

// byteSize is a flag holding a number of bytes, written with an optional
// unit: 500MB, 5GB, 2GiB (KB, MB, GB, TB are powers of 1000; KiB, MiB,
// GiB, TiB of 1024).
type byteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

func (b *byteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	var n float64
	if _, err := fmt.Sscan(s, &n); err != nil || n < 0 || n*float64(mult) > 1<<62 {
		return fmt.Errorf("%q is not a size such as 500MB or 5GB", s)
	}
	*b = byteSize(n * float64(mult))
	return nil
}

func (b byteSize) String() string {
	switch v := int64(b); {
	case v >= 1e9 && v%1e9 == 0:
		return fmt.Sprintf("%dGB", v/1e9)
	case v >= 1e6 && v%1e6 == 0:
		return fmt.Sprintf("%dMB", v/1e6)
	}
	return fmt.Sprintf("%dB", int64(b))
}

// humanBytes writes n bytes for a person: 3.2 GB, 640 MB.
func humanBytes(n int64) string {
	switch {
	case n >= 1e12:
		return fmt.Sprintf("%.1f TB", float64(n)/1e12)
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.0f MB", float64(n)/1e6)
	}
	return fmt.Sprintf("%d kB", n/1000)
}
