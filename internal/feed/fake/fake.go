// Package fake holds stand-ins for market-data providers' servers, for
// tests without network access: each speaks its provider's documented
// protocol over a real socket on a loopback port, and sends only what the
// test tells it to.
package fake
