package main

import (
	"fmt"
	"time"
)

func migrateCommand() *command {
	c := newCommand("migrate", "bring the PostgreSQL schema up to date",
		"stockpipe migrate --database-url postgres://stockpipe@127.0.0.1:5432/stockpipe")
	url := c.fs.String("database-url", "", "PostgreSQL URL (or DATABASE_URL)")
	dbWait := c.fs.Duration("db-wait", time.Minute, "how long to wait for an unreachable PostgreSQL before giving up (0 = until interrupted)")
	var pr peer
	pr.register(c)
	c.run = func(rc *runCtx) error {
		dbURL, err := pr.databaseURL(rc, *url)
		if err != nil {
			return err
		}
		pool, err := openDBWithin(rc, dbURL, 2, *dbWait)
		if err != nil {
			return err
		}
		pool.Close()
		fmt.Fprintln(rc.stdout, "schema is up to date")
		return nil
	}
	return c
}
