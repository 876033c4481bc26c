package main

import "fmt"

func migrateCommand() *command {
	c := newCommand("migrate", "bring the PostgreSQL schema up to date",
		"stockpipe migrate --database-url postgres://stockpipe@127.0.0.1:5432/stockpipe")
	url := c.fs.String("database-url", "", "PostgreSQL URL (or DATABASE_URL)")
	c.run = func(rc *runCtx) error {
		pool, err := openDB(rc, *url, 2)
		if err != nil {
			return err
		}
		pool.Close()
		fmt.Fprintln(rc.stdout, "schema is up to date")
		return nil
	}
	return c
}
