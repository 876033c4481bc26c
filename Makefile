# stockpipe — the two commands a fresh clone needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/stockpipe
PKGS    := ./...

.PHONY: all build run test test-short test-chaos vet lint fmt bench fuzz clean parquet-reader tools

# golangci-lint, built from the module proxy into bin/ the first time.
GOLANGCI_VERSION := v2.15.0
GOLANGCI := bin/golangci-lint-$(GOLANGCI_VERSION)

all: build

VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -ldflags "-X main.buildVersion=$(VERSION)" -o $(BIN) ./cmd/stockpipe

## run: the whole pipeline in one process on embedded defaults (data in ./data)
run: build
	./$(BIN) up

## test: vet, golangci-lint, formatting and every test (race detector on) against a real broker, PostgreSQL and Chromium,
## then short fuzz runs of the tick decoder and the tick rules
test: vet lint parquet-reader
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed on:"; gofmt -l .; exit 1; }
	$(GO) test -race -count=1 -timeout 9m $(PKGS)
	$(GO) test ./internal/market -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 15s
	$(GO) test ./internal/market -run '^$$' -fuzz '^FuzzRules$$' -fuzztime 15s

## test-chaos: the large chaos and scale-out runs (a million ticks; processors SIGKILLed,
## PostgreSQL and the broker restarted), the time-isolation property at full size and `up`
## stopped for two real minutes, without the race detector; prints the accounting
test-chaos:
	STOCKPIPE_CHAOS=full $(GO) test -count=1 -timeout 10m -run '^TestLateOnlyRelativeToOwnSymbol$$' ./internal/analytics
	cd cmd/stockpipe && STOCKPIPE_CHAOS=full $(GO) test -count=1 -timeout 30m -run '^(TestChaos|TestScaleOut|TestUpRestartRaisesNoStale|TestRecoveryDoesNotRewind)$$'

vet:
	$(GO) vet $(PKGS)

## lint: golangci-lint with the checks in .golangci.yml
lint: $(GOLANGCI)
	$(GOLANGCI) run ./...

$(GOLANGCI):
	@mkdir -p bin
	GOBIN=$(CURDIR)/bin/lint-$(GOLANGCI_VERSION) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv bin/lint-$(GOLANGCI_VERSION)/golangci-lint $(GOLANGCI) && rmdir bin/lint-$(GOLANGCI_VERSION)

fmt:
	gofmt -w .

## tools: the test tools a fresh machine builds once (golangci-lint, the Parquet reader); make test does it too
tools: $(GOLANGCI) parquet-reader

## parquet-reader: the Parquet engine apart from parquet-go that the archive's tests read its files with
## (hyparquet on Node.js, .ci/parquet-reader), installed from its lock file the first time and when the lock changes
PARQUET_READER := .ci/parquet-reader/node_modules/.installed

parquet-reader: $(PARQUET_READER)

$(PARQUET_READER): .ci/parquet-reader/package.json .ci/parquet-reader/package-lock.json
	@command -v npm >/dev/null || { echo "parquet-reader: needs Node.js 20 and npm (Debian: apt-get install nodejs npm)"; exit 1; }
	npm ci --prefix .ci/parquet-reader --no-audit --no-fund --loglevel=error
	@touch $@

## bench: the hot-path micro-benchmarks, then the end-to-end load test
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...
	./$(BIN) loadtest --count 200000
	./$(BIN) loadtest --count 200000 --rate 20000

## fuzz: each fuzz target for a bounded time
fuzz:
	$(GO) test ./internal/market -run '^$$' -fuzz FuzzDecode -fuzztime 60s
	$(GO) test ./internal/market -run '^$$' -fuzz FuzzParseTime -fuzztime 30s
	$(GO) test ./internal/generate -run '^$$' -fuzz FuzzReplay -fuzztime 30s
	$(GO) test ./internal/indicator -run '^$$' -fuzz FuzzSet -fuzztime 30s
	$(GO) test ./internal/candle -run '^$$' -fuzz FuzzWindow -fuzztime 30s
	$(GO) test ./internal/anomaly -run '^$$' -fuzz FuzzDetector -fuzztime 30s
	$(GO) test ./internal/analytics -run '^$$' -fuzz FuzzRestore -fuzztime 30s

clean:
	rm -rf bin
