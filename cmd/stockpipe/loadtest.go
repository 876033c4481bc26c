package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/stockpipe/stockpipe/internal/datadir"
	"github.com/stockpipe/stockpipe/internal/loadtest"
	"github.com/stockpipe/stockpipe/internal/web"
)

func loadtestCommand() *command {
	c := newCommand("loadtest", "measure throughput and latency of the whole pipeline against raw COPY and a naive consumer",
		"stockpipe loadtest --count 200000 --rate 20000")
	count := c.fs.Int64("count", 1_000_000, "ticks to send through the pipeline")
	rate := c.fs.Float64("rate", 0, "ticks per second; 0 = as fast as possible (latency figures then mean little)")
	symbols := c.fs.Int("symbols", 30, "number of symbols; beyond the 30 built-in ones, tickers S0001, S0002, … are generated")
	dataDir := c.fs.String("data-dir", "", "where the embedded broker and PostgreSQL keep their data (default: a temporary directory, removed afterwards)")
	var kf kafkaFlags
	kf.register(c.fs, "use this Kafka cluster instead of the embedded broker (a topic of the run's own is created and deleted)")
	url := c.fs.String("database-url", "", "use this PostgreSQL instead of the embedded one (or DATABASE_URL); its ticks table must be empty")
	baseline := c.fs.Int("baseline-rows", 5_000, "rows the naive row-by-row baseline inserts")
	partitions := c.fs.Int("partitions", 6, "partitions of the load-test topic")
	asJSON := c.fs.Bool("json", false, "print the report as one JSON object")
	batchSize := c.fs.Int("batch-size", 10_000, "processor: records per transaction at most")
	batchWait := c.fs.Duration("batch-wait", defaultBatchWait, "processor: how much longer a batch may wait to fill once it has records (0: none; the next batch fills while one commits)")
	liveRate := c.fs.Int("live-rate", web.DefaultLiveRate, "web server: live updates per symbol per second a browser gets (0 = every one)")
	sseClients := c.fs.Int("sse-clients", 0, "also connect this many clients to the overview's live stream and report the events each gets and this process's CPU meanwhile (0 = only the one measuring tick→browser latency)")
	cpuProfile := c.fs.String("cpuprofile", "", "write a CPU profile of the whole run (generator, broker, processor, server) to this file, for `go tool pprof`")
	compare := c.fs.Int("compare-symbols", 0, "then run the same workload again with this many symbols and report the throughput ratio (e.g. 5000; 0 = no second run)")
	soak := c.fs.Duration("soak", 0, "instead: a soak of this length at --rate (default 20000), the processor in its own process, its memory and the lag sampled, then exactly-once checked")
	killEvery := c.fs.Duration("kill-every", 0, "soak: SIGKILL the processor this often and restart it (0 = never)")
	faults := c.fs.Float64("faults", 0, "soak: probability 0..0.5 that a record is a fault (duplicate, late, malformed, invalid…)")
	memLimit := c.fs.String("processor-memory-limit", "", "soak: run the processor with this Go soft memory limit (GOMEMLIMIT, e.g. 128MiB)")
	c.run = func(rc *runCtx) error {
		if *dataDir != "" {
			lock, err := datadir.Acquire(*dataDir, "loadtest")
			if err != nil {
				return err
			}
			defer releaseLock(rc, lock)
		}
		if *soak != 0 {
			return runSoak(rc, loadtest.SoakConfig{Duration: *soak, Rate: *rate, Symbols: *symbols, Faults: *faults,
				KillEvery: *killEvery, DataDir: *dataDir, Logger: rc.log}, *memLimit, *asJSON)
		}
		switch {
		case *count < 1:
			return errors.New("--count must be at least 1")
		case *rate < 0:
			return errors.New("--rate must be 0 (as fast as possible) or above")
		case *symbols < 1 || *symbols > 9999:
			return errors.New("--symbols must be between 1 and 9999")
		case *baseline < 1:
			return errors.New("--baseline-rows must be at least 1")
		case *partitions < 1:
			return errors.New("--partitions must be at least 1")
		case *liveRate < 0:
			return errors.New("--live-rate must be 0 (every update) or above")
		case *sseClients < 0:
			return errors.New("--sse-clients must be 0 or above")
		case *compare < 0 || *compare > 9999:
			return errors.New("--compare-symbols must be between 1 and 9999, or 0 for no second run")
		case *compare > 0 && (*dataDir != "" || *url != ""):
			return errors.New("--compare-symbols runs twice on fresh temporary data; drop --data-dir and --database-url")
		}
		cfg := loadtest.Config{Count: *count, Rate: *rate, Symbols: *symbols, DataDir: *dataDir,
			DatabaseURL: *url, BaselineRows: *baseline, Partitions: int32(*partitions), Logger: rc.log,
			BatchSize: *batchSize, BatchWait: *batchWait, LiveRate: *liveRate, SSEClients: *sseClients}
		if kf.brokers != "" {
			kcfg, err := kf.config(rc, "stockpipe-loadtest")
			if err != nil {
				return err
			}
			cfg.Kafka = kcfg
		}
		if *cpuProfile != "" {
			f, err := os.Create(*cpuProfile)
			if err != nil {
				return fmt.Errorf("creating the CPU profile: %w", err)
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return fmt.Errorf("starting the CPU profile: %w", err)
			}
			defer pprof.StopCPUProfile()
		}
		rep, err := loadtest.Run(rc.ctx, cfg)
		if err != nil {
			return err
		}
		if *compare > 0 {
			more := cfg
			more.Symbols = *compare
			other, err := loadtest.Run(rc.ctx, more)
			if err != nil {
				return fmt.Errorf("the run with %d symbols: %w", *compare, err)
			}
			rep.CompareSymbols(&other)
		}
		if *asJSON {
			enc := json.NewEncoder(rc.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		}
		if err := rep.WriteTable(rc.stdout); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
		return nil
	}
	return c
}

// memLimitRE is the form GOMEMLIMIT takes; the runtime refuses to start
// on anything else.
var memLimitRE = regexp.MustCompile(`^[0-9]+(B|KiB|MiB|GiB|TiB)?$`)

// runSoak runs loadtest --soak with this binary's process command as the
// processor.
func runSoak(rc *runCtx, cfg loadtest.SoakConfig, memLimit string, asJSON bool) error {
	switch {
	case cfg.Duration < time.Second:
		return errors.New("--soak must be at least 1s")
	case cfg.Rate < 0:
		return errors.New("--rate must be above 0 for a soak")
	case cfg.Faults < 0 || cfg.Faults > 0.5:
		return errors.New("--faults must be between 0 and 0.5")
	case cfg.KillEvery < 0:
		return errors.New("--kill-every must not be negative")
	case memLimit != "" && !memLimitRE.MatchString(memLimit):
		return fmt.Errorf("--processor-memory-limit %q: give bytes with an optional unit, e.g. 128MiB or 1GiB", memLimit)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program to run the processor: %w", err)
	}
	cfg.Processor = func(brokers []string, databaseURL string) *exec.Cmd {
		// A static member: a killed processor's partitions come back as
		// soon as its successor joins, as with "up".
		cmd := exec.Command(self, "process", "--brokers", strings.Join(brokers, ","), "--database-url", databaseURL,
			"--instance-id", "soak", "--log-level", "warn")
		if memLimit != "" {
			cmd.Env = append(os.Environ(), "GOMEMLIMIT="+memLimit)
		}
		return cmd
	}
	rep, err := loadtest.Soak(rc.ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(rc.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := rep.WriteTable(rc.stdout); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	if !rep.Passed {
		return errors.New("the soak failed: " + strings.Join(rep.Notes, "; "))
	}
	return nil
}
