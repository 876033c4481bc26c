package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// healthCommand checks an endpoint and exits 0 or 1. It exists for
// container health checks: the release image has no shell, curl or wget, so
// the binary itself is the only program a health check can run.
func healthCommand() *command {
	c := newCommand("health", "check an HTTP endpoint or a TCP address (exit 0 or 1), for container health checks",
		"stockpipe health --url http://127.0.0.1:8051/readyz")
	target := c.fs.String("url", "", "GET this http(s) URL; healthy on a 2xx answer (e.g. a processor's /readyz)")
	tcp := c.fs.String("tcp", "", "connect to this host:port; healthy if it accepts the connection")
	timeout := c.fs.Duration("timeout", 5*time.Second, "give up after this long")
	c.run = func(rc *runCtx) error {
		if *target == "" && *tcp == "" {
			return errors.New("say what to check: --url http://127.0.0.1:8050/healthz or --tcp host:port")
		}
		if *timeout <= 0 {
			return errors.New("--timeout must be above 0")
		}
		ctx, cancel := context.WithTimeout(rc.ctx, *timeout)
		defer cancel()
		var done []string
		if *tcp != "" {
			if err := checkTCP(ctx, *tcp); err != nil {
				return err
			}
			done = append(done, "tcp "+*tcp+" accepts connections")
		}
		if *target != "" {
			status, err := checkURL(ctx, *target)
			if err != nil {
				return err
			}
			done = append(done, "GET "+*target+": "+status)
		}
		fmt.Fprintln(rc.stdout, "healthy: "+strings.Join(done, "; "))
		return nil
	}
	return c
}

func checkTCP(ctx context.Context, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("--tcp %q is not host:port", addr)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp %s: %w", addr, err)
	}
	return conn.Close()
}

// checkURL GETs raw and returns its status if it is 2xx. A failure carries
// the start of the body, where /readyz says which check failed.
func checkURL(ctx context.Context, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--url %q is not an http:// or https:// URL", raw)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return "", fmt.Errorf("--url %q: %w", raw, err)
	}
	// Straight to the endpoint: a proxy from the environment would check
	// the proxy, not this container.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", raw, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg := strings.Join(strings.Fields(string(body)), " ")
		if r := []rune(msg); len(r) > 200 {
			msg = string(r[:200]) + "…"
		}
		if msg != "" {
			return "", fmt.Errorf("GET %s: %s: %s", raw, resp.Status, msg)
		}
		return "", fmt.Errorf("GET %s: %s", raw, resp.Status)
	}
	return resp.Status, nil
}
