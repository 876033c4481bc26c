// Command stockpipe is a real-time stock market data pipeline in one binary:
// a market simulator and historical replay feeding Kafka, a stream processor
// storing ticks exactly once in PostgreSQL, and the embedded broker and
// database that let it all run on a laptop with no set-up.
//
// This package only wires flags to the internal packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// runCtx is what a command runs with.
type runCtx struct {
	ctx    context.Context
	log    *slog.Logger
	stdout io.Writer
	stderr io.Writer
	cmd    *command // the parsed command line, for where each flag came from
	// dbFrom says where the database URL came from when that is not the
	// command line ("DATABASE_URL", "the stockpipe up running on ./data"),
	// for messages about the database.
	dbFrom string
}

func commands() []*command {
	return []*command{
		upCommand(),
		brokerCommand(),
		generateCommand(),
		replayCommand(),
		ingestCommand(),
		backfillCommand(),
		processCommand(),
		migrateCommand(),
		serveCommand(),
		schedulerCommand(),
		dagCommand(),
		evaluateCommand(),
		loadtestCommand(),
		configCommand(),
		healthCommand(),
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout, cmds)
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" || args[0] == "version" {
		fmt.Fprintln(stdout, "stockpipe", version())
		return 0
	}
	var cmd *command
	for _, c := range cmds {
		if c.name == args[0] {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "stockpipe: unknown command %q (run 'stockpipe --help' for the list)\n", args[0])
		return 2
	}
	if err := cmd.parse(args[1:], stdout); err != nil {
		if errors.Is(err, errHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "stockpipe "+err.Error())
		return 2
	}
	log, err := cmd.logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "stockpipe %s: %v\n", cmd.name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(&runCtx{ctx: ctx, log: log, stdout: stdout, stderr: stderr, cmd: cmd}); err != nil {
		if cmd.logFormat == "json" {
			// A log shipper reading JSON lines must get the reason too.
			log.Error("stockpipe "+cmd.name+" failed", "err", err.Error())
		} else {
			fmt.Fprintf(stderr, "stockpipe %s: %v\n", cmd.name, err)
		}
		return 1
	}
	return 0
}

func usage(w io.Writer, cmds []*command) {
	fmt.Fprintln(w, "stockpipe — a real-time stock market data pipeline: Kafka in, PostgreSQL out, exactly once.")
	fmt.Fprintln(w, "\nUsage:\n  stockpipe <command> [flags]\n\nCommands:")
	sort.SliceStable(cmds, func(i, j int) bool { return cmds[i].name == "up" && cmds[j].name != "up" })
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'stockpipe <command> --help' for a command's flags, 'stockpipe --version' for the version. Every flag can also be set")
	fmt.Fprintln(w, "from the environment as STOCKPIPE_<FLAG> (DATABASE_URL works for --database-url).")
}
