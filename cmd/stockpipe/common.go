package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stockpipe/stockpipe/internal/dag"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/retry"
	"github.com/stockpipe/stockpipe/internal/store"
)

// kafkaFlags are the flags for reaching a Kafka cluster.
type kafkaFlags struct {
	brokers                string
	tls                    bool
	tlsCA, tlsCert, tlsKey string
	saslMech               string
	saslUser, saslPass     string
}

func (k *kafkaFlags) register(fs *flag.FlagSet, help string) {
	fs.StringVar(&k.brokers, "brokers", "", help)
	fs.BoolVar(&k.tls, "kafka-tls", false, "connect to Kafka over TLS (implied by the other --kafka-tls-* flags)")
	fs.StringVar(&k.tlsCA, "kafka-tls-ca", "", "PEM file of the CA that signed the brokers' certificates (default: the system's)")
	fs.StringVar(&k.tlsCert, "kafka-tls-cert", "", "PEM client certificate for mutual TLS")
	fs.StringVar(&k.tlsKey, "kafka-tls-key", "", "PEM key of --kafka-tls-cert")
	fs.StringVar(&k.saslMech, "kafka-sasl", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512")
	fs.StringVar(&k.saslUser, "kafka-user", "", "SASL user name")
	fs.StringVar(&k.saslPass, "kafka-password", "", "SASL password (prefer STOCKPIPE_KAFKA_PASSWORD)")
}

// config returns the client configuration; the client logs through rc's
// logger.
func (k *kafkaFlags) config(rc *runCtx, clientID string) (kafka.Config, error) {
	brokers, err := kafka.ParseBrokers(k.brokers)
	if err != nil {
		return kafka.Config{}, fmt.Errorf("--brokers: %w", err)
	}
	cfg := kafka.Config{Brokers: brokers, ClientID: clientID, Logger: rc.log}
	if cfg.TLS, err = kafka.TLSConfig(k.tls, k.tlsCA, k.tlsCert, k.tlsKey); err != nil {
		return kafka.Config{}, err
	}
	if cfg.SASL, err = kafka.SASLMechanism(k.saslMech, k.saslUser, k.saslPass); err != nil {
		return kafka.Config{}, err
	}
	return cfg, nil
}

// Waiting for PostgreSQL: attempts are spaced by retry.Connect.
const (
	// dbAttempt bounds one attempt (connecting and migrating), so that an
	// address that swallows packets is reported and retried rather than
	// waited on forever.
	dbAttempt = 30 * time.Second
	// dbRemind is how often a long wait is logged again at warning level.
	dbRemind = time.Minute
)

// openDB connects to url and brings the schema up to date, waiting for
// PostgreSQL for as long as rc.ctx lasts.
func openDB(rc *runCtx, url string, maxConns int32) (*pgxpool.Pool, error) {
	return openDBWithin(rc, url, maxConns, 0)
}

// openDBWithin connects to url and brings the schema up to date. While
// PostgreSQL is unreachable it logs one warning and retries with exponential
// backoff until rc.ctx ends or, if wait > 0, until wait has passed: a server
// that starts after us, or restarts, is a normal event, not a reason to die.
// A rejected password, an unknown user or a missing database will not fix
// itself, so those fail at once with a message naming the fix.
func openDBWithin(rc *runCtx, url string, maxConns int32, wait time.Duration) (*pgxpool.Pool, error) {
	if err := store.CheckURL(url); err != nil {
		return nil, fmt.Errorf("--database-url: %w", err)
	}
	target := dbTargetOf(url)
	ctx := rc.ctx
	if wait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	start := time.Now()
	var lastErr error
	var reminded time.Time
	// stopped explains why the wait ended: an interrupt or the bound.
	stopped := func(cause error) error {
		if rc.ctx.Err() != nil {
			if lastErr == nil {
				return fmt.Errorf("connecting to PostgreSQL at %s: %w", target.addr, rc.ctx.Err())
			}
			return &dbError{msg: fmt.Sprintf("stopped while waiting for PostgreSQL at %s%s (last error: %s)",
				target.addr, rc.urlFrom(), rootCause(lastErr)), err: rc.ctx.Err()}
		}
		if lastErr != nil {
			cause = lastErr // cause may be just the bound running out mid-attempt
		}
		return &dbError{msg: fmt.Sprintf("PostgreSQL at %s%s did not answer within %s (last error: %s)",
			target.addr, rc.urlFrom(), wait, rootCause(cause)), err: cause}
	}
	for attempt := 1; ; attempt++ {
		pool, err := connectAndMigrate(ctx, rc, url, maxConns)
		if err == nil {
			if lastErr != nil {
				rc.log.Info("PostgreSQL answers; continuing", "address", target.addr,
					"waited", time.Since(start).Round(time.Millisecond), "attempts", attempt)
			}
			return pool, nil
		}
		if ctx.Err() != nil {
			return nil, stopped(err)
		}
		if perr := permanentDBError(err, target); perr != nil {
			return nil, perr
		}
		if !transientDBError(err) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		switch {
		case lastErr == nil:
			attrs := []any{"address", target.addr, "url", target.redacted, "err", rootCause(err), "retry_in", retry.Connect.Delay(attempt)}
			if rc.dbFrom != "" {
				attrs = append(attrs, "url_from", rc.dbFrom)
			}
			if wait > 0 {
				attrs = append(attrs, "give_up_after", wait)
			}
			rc.log.Warn("PostgreSQL is unreachable; retrying until it answers", attrs...)
			reminded = time.Now()
		case time.Since(reminded) >= dbRemind:
			rc.log.Warn("PostgreSQL is still unreachable; retrying", "address", target.addr,
				"err", rootCause(err), "waited", time.Since(start).Round(time.Second), "url_from", rc.dbFromOr("the command line"))
			reminded = time.Now()
		default:
			rc.log.Debug("PostgreSQL still unreachable", "address", target.addr, "err", rootCause(err), "retry_in", retry.Connect.Delay(attempt))
		}
		lastErr = err
		if retry.Connect.Wait(ctx, attempt) != nil {
			return nil, stopped(err)
		}
	}
}

// urlFrom is " (URL from …)" when the database URL did not come from the
// command line, for messages about the database.
func (rc *runCtx) urlFrom() string {
	if rc.dbFrom == "" {
		return ""
	}
	return " (URL from " + rc.dbFrom + ")"
}

func (rc *runCtx) dbFromOr(def string) string {
	if rc.dbFrom == "" {
		return def
	}
	return rc.dbFrom
}

// connectAndMigrate is one attempt of openDB.
func connectAndMigrate(ctx context.Context, rc *runCtx, url string, maxConns int32) (*pgxpool.Pool, error) {
	ctx, cancel := context.WithTimeout(ctx, dbAttempt)
	defer cancel()
	pool, err := store.Open(ctx, url, maxConns)
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx, pool, rc.log); err != nil {
		pool.Close()
		return nil, err
	}
	if err := dag.Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("applying scheduler migrations: %w", err)
	}
	return pool, nil
}

// dbTarget is what a database URL points at, for messages.
type dbTarget struct {
	addr     string // host:port (or socket path), comma-separated with fallbacks
	user     string
	database string
	redacted string // the URL without its password
}

func dbTargetOf(url string) dbTarget {
	t := dbTarget{redacted: store.Redact(url), addr: "(unknown address)"}
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return t // CheckURL has accepted url, so this does not happen
	}
	t.user, t.database = cfg.User, cfg.Database
	addrs := []string{hostPort(cfg.Host, cfg.Port)}
	for _, fb := range cfg.Fallbacks {
		if a := hostPort(fb.Host, fb.Port); !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	t.addr = strings.Join(addrs, ",")
	return t
}

func hostPort(host string, port uint16) string {
	if strings.HasPrefix(host, "/") {
		return fmt.Sprintf("%s/.s.PGSQL.%d", host, port)
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// dbError is a failure to open the database with a message of its own,
// one line saying what to do; the underlying error stays reachable through
// errors.Is and errors.As.
type dbError struct {
	msg string
	err error
}

func (e *dbError) Error() string { return e.msg }
func (e *dbError) Unwrap() error { return e.err }

// permanentDBError returns a one-line error naming the fix when err is a
// refusal that will not go away by waiting, nil otherwise.
func permanentDBError(err error, t dbTarget) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return nil
	}
	var msg string
	switch pgErr.Code {
	case "28P01": // invalid_password
		msg = fmt.Sprintf("PostgreSQL at %s rejected the password for user %q (SQLSTATE %s): fix the password in --database-url or DATABASE_URL (%s)",
			t.addr, t.user, pgErr.Code, t.redacted)
	case "28000": // invalid_authorization_specification, e.g. no such role
		msg = fmt.Sprintf("PostgreSQL at %s refused user %q (SQLSTATE %s: %s): fix the user in --database-url or DATABASE_URL (%s), or let the server accept it (CREATE ROLE, pg_hba.conf)",
			t.addr, t.user, pgErr.Code, pgErr.Message, t.redacted)
	case "3D000": // invalid_catalog_name: no such database
		msg = fmt.Sprintf("database %q does not exist on PostgreSQL at %s (SQLSTATE %s): create it (CREATE DATABASE %s) or fix the database name in --database-url or DATABASE_URL (%s)",
			t.database, t.addr, pgErr.Code, pgx.Identifier{t.database}.Sanitize(), t.redacted)
	default:
		return nil
	}
	return &dbError{msg: msg, err: err}
}

// transientDBError reports errors that waiting may cure: the server is not
// reachable, is starting, shutting down or recovering, or is out of
// connections. Any other error from the server (a failing migration, say)
// is returned as it is.
func transientDBError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"), // insufficient resources, e.g. too many connections
			pgErr.Code == "57P01",               // admin_shutdown
			pgErr.Code == "57P02",               // crash_shutdown
			pgErr.Code == "57P03":               // cannot_connect_now: starting up or in recovery
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || pgconn.Timeout(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// rootCause is the part of a connection error worth showing: the network
// error or the server's message, without the layers of context around it.
func rootCause(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Error()
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return opErr.Error()
	}
	if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("no answer within %s", dbAttempt)
	}
	return err.Error()
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
