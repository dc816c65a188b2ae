# baton's build. `make help` lists the targets.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
FUZZTIME ?= 20s

.PHONY: help build test lint unit demo fuzz bench-gitsync bench-upgrade clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/baton with the version stamped in
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/baton ./cmd/baton

test: ## everything CI runs: install test dependencies (as root), lint, all tests with -race
	./scripts/test

lint: ## gofmt, go vet, staticcheck, go mod tidy check
	./scripts/lint

unit: ## only the tests, with -race (no package installs, no lint)
	$(GO) test -race ./...

demo: ## validate and plan the embedded example fleet
	$(GO) run ./cmd/baton demo

fuzz: ## run every fuzz target for FUZZTIME each (default 20s)
	./scripts/fuzz $(FUZZTIME)

bench-gitsync: ## poll and fetch on a repository of 10,000 commits and 5,000 files
	$(GO) test -run '^$$' -bench BenchmarkPoll -benchtime 20x ./gitsync/

bench-upgrade: ## upgrades and reverts of a real systemd host (needs root): each step's time
	$(GO) test -run '^$$' -bench 'BenchmarkUpgrade|BenchmarkRevert' -benchtime 5x ./agent/

clean: ## remove build output
	rm -rf bin dist
