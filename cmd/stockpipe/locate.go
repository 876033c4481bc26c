package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/stockpipe/stockpipe/internal/datadir"
	"github.com/stockpipe/stockpipe/internal/store"
)

// source says where a parsed flag's value came from: "" for the command
// line or the default, else the environment variable that set it.
func (c *command) source(name string) string {
	set := false
	c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if set {
		return ""
	}
	return envSource(name)
}

// given reports whether a flag was set on the command line or in the
// environment, rather than left at its default.
func (c *command) given(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set || envSource(name) != ""
}

// peer finds what the `stockpipe up` running on a data directory serves,
// so that commands run next to it need no URLs.
type peer struct {
	dataDir string
	ep      *datadir.Endpoints
	err     error
}

func (p *peer) register(c *command) {
	c.fs.StringVar(&p.dataDir, "data-dir", "./data",
		"with no --database-url (or --brokers), use those of the stockpipe up running on this data directory")
}

// endpoints reads the data directory's endpoints once.
func (p *peer) endpoints() (*datadir.Endpoints, error) {
	if p.ep == nil && p.err == nil {
		ep, err := datadir.ReadEndpoints(p.dataDir)
		if err != nil {
			p.err = err
		} else {
			p.ep = &ep
		}
	}
	return p.ep, p.err
}

func (p *peer) describe(ep *datadir.Endpoints) string {
	return fmt.Sprintf("the stockpipe %s running on %s (pid %d)", ep.Command, p.dataDir, ep.PID)
}

// databaseURL returns the database a command works on: url (from the
// command line or the environment, which it then says), else that of the
// stockpipe up running on the data directory, which it says too. It records
// the source in rc.dbFrom for messages about the database.
func (p *peer) databaseURL(rc *runCtx, url string) (string, error) {
	if url != "" {
		if env := rc.cmd.source("database-url"); env != "" {
			rc.dbFrom = env
			rc.log.Info("using the database URL from the environment", "variable", env, "url", store.Redact(url))
		}
		return url, nil
	}
	ep, err := p.endpoints()
	if err != nil || ep.DatabaseURL == "" {
		if err != nil && !errors.Is(err, datadir.ErrNotRunning) {
			return "", err
		}
		return "", fmt.Errorf("no database URL: pass --database-url (or set DATABASE_URL), or start stockpipe up first (none is running on --data-dir %s)", p.dataDir)
	}
	rc.dbFrom = p.describe(ep)
	rc.log.Info("using the database of "+rc.dbFrom, "url", store.Redact(ep.DatabaseURL))
	return ep.DatabaseURL, nil
}

// brokers fills kf.brokers from the stockpipe up running on the data
// directory when none were given, saying so; required says whether the
// command cannot do without. Brokers from the environment are said too.
func (p *peer) brokers(rc *runCtx, kf *kafkaFlags, required bool) error {
	if kf.brokers != "" {
		if env := rc.cmd.source("brokers"); env != "" {
			rc.log.Info("using the brokers from the environment", "variable", env, "brokers", kf.brokers)
		}
		return nil
	}
	ep, err := p.endpoints()
	if err != nil || len(ep.Brokers) == 0 {
		if err != nil && !errors.Is(err, datadir.ErrNotRunning) {
			return err
		}
		if required {
			return fmt.Errorf("no brokers: pass --brokers (for example 127.0.0.1:9092), or start stockpipe up or stockpipe broker first (none is running on --data-dir %s)", p.dataDir)
		}
		return nil
	}
	kf.brokers = strings.Join(ep.Brokers, ",")
	rc.log.Info("using the brokers of "+p.describe(ep), "brokers", kf.brokers)
	return nil
}

// releaseLock gives up the data directory when the command ends; a failure
// to remove the endpoints file is worth a line, not an exit code.
func releaseLock(rc *runCtx, lock *datadir.Lock) {
	if err := lock.Release(); err != nil {
		rc.log.Warn("releasing the data directory", "dir", lock.Dir(), "err", err)
	}
}
