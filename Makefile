# Troupe's tasks. `make test` is what CI runs (.ci/run).
GO ?= go

# Packages with goroutines of their own: run under the race detector.
RACE_PKGS := ./broker/... ./internal/... ./transport/... ./handlers/... ./outbox/... ./saga/... ./troupefx/... ./tracing/... ./examples/...
# Packages with tests that need the real servers (files *_integration_test.go).
INTEGRATION_PKGS = $(sort $(dir $(shell find . -name '*_integration_test.go' -not -path './.git/*')))

.PHONY: all test unit race integration browser-deps lint compose-check bench load-multi fuzz-smoke demo shop

all: lint test

## test: everything — lint, the compose file's check, unit tests (no server),
## race detector, then the integration suites against real RabbitMQ and
## PostgreSQL started on loopback (and the browser test, in headless Chromium).
test: lint compose-check unit race integration

unit:
	$(GO) test -count=1 ./...

race:
	$(GO) test -race -count=1 $(RACE_PKGS)

integration: browser-deps
	bash scripts/with-servers.sh $(GO) test -count=1 -tags integration $(INTEGRATION_PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...

## browser-deps: Debian's chromium for the browser test (the live page's,
## examples/ecommerce/shop/browser_integration_test.go); installs it with
## apt-get the first time, silent when it is there.
browser-deps:
	@bash scripts/browser-deps.sh

## compose-check: docker-compose.yml is a valid compose file (`docker-compose
## config -q`; installs Debian's docker-compose package the first time).
compose-check:
	bash scripts/compose-check.sh docker-compose.yml

## bench: the benchmarks recorded in docs/BENCHMARKS.md (the transport
## comparison starts RabbitMQ; it prints progress as it goes).
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -cpu=1,2 ./broker/...
	$(GO) run ./broker/internal/benchmem
	bash scripts/with-servers.sh $(GO) run ./internal/cmd/transportbench
	bash scripts/with-servers.sh $(GO) run ./internal/cmd/sagabench -sagas 2000

## load-multi: the e-commerce load with one process per service on RabbitMQ
## and PostgreSQL (started privately); LOAD_ARGS go to `shop load`.
LOAD_ARGS ?= -n 3000 -c 50
load-multi:
	bash scripts/with-servers.sh bash scripts/shop-load-multiprocess.sh $(LOAD_ARGS)

## fuzz-smoke: each fuzz target for a few seconds (FUZZTIME).
FUZZTIME ?= 5s
fuzz-smoke:
	bash scripts/fuzz-smoke.sh $(FUZZTIME)

## shop: the README's first command (the e-commerce stack, all in one process).
shop:
	$(GO) run ./examples/ecommerce/cmd/shop

## demo: the bundled broker alone, routing a checkout choreography.
demo:
	$(GO) run ./cmd/troupe demo
