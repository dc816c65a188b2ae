# baton's build. `make help` lists the targets.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
FUZZTIME ?= 20s

.PHONY: help build test lint unit demo fuzz bench-gitsync bench-lease bench-fleetlock bench-upgrade clean

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

demo: ## (root) the demo fleet, live: 3 real systemd hosts behind HAProxy, a rolling upgrade, a bad release halted
	./scripts/demo

fuzz: ## run every fuzz target for FUZZTIME each (default 20s)
	./scripts/fuzz $(FUZZTIME)

bench-gitsync: ## poll and fetch on a repository of 10,000 commits and 5,000 files; peak memory of fetching a 100 MB file
	$(GO) test -run '^$$' -bench BenchmarkPoll -benchtime 20x ./gitsync/
	$(GO) test -run '^$$' -bench BenchmarkFetchBig -benchtime 1x ./gitsync/

bench-lease: ## etcd lease handoff latency and 1,000 contenders against one etcd
	$(GO) test -run '^$$' -bench 'BenchmarkEtcd' -benchtime 2000x ./lease/

bench-fleetlock: ## FleetLock handoff p50/p95 against an airlock-like server: 8 contenders, holds of 0.5s, 5s and 60s (scaled)
	$(GO) test -run '^$$' -bench 'BenchmarkFleetlockHandoff' -benchtime 1x -timeout 10m ./lease/

bench-upgrade: ## upgrades and reverts of a real systemd host (needs root): each step's time
	$(GO) test -run '^$$' -bench 'BenchmarkUpgrade|BenchmarkRevert' -benchtime 5x ./agent/

clean: ## remove build output
	rm -rf bin dist

# Packages: a .deb and an .rpm per architecture, with nfpm (a Go tool of this module)
# driven by packaging/nfpm.yaml. `make packages VERSION=v1.2.3 PKG_ARCHS=amd64 DIST=out`
PKG_ARCHS      ?= amd64 arm64
DIST           ?= dist
PKG_MAINTAINER ?= baton maintainers <maintainers@baton-fleet.invalid>
ifeq ($(origin PKG_VERSION),undefined)
PKG_VERSION := $(shell sh packaging/pkgversion '$(VERSION)')
endif
PKG_STAGE := $(DIST)/stage
rpmarch = $(if $(filter amd64,$(1)),x86_64,$(if $(filter arm64,$(1)),aarch64,$(1)))

.PHONY: packages package-stage $(addprefix package-,$(PKG_ARCHS))

packages: $(addprefix package-,$(PKG_ARCHS)) ## dist/baton_<version>_<arch>.deb and dist/baton-<version>.<rpm arch>.rpm for PKG_ARCHS
	@ls -1 $(DIST)/*.deb $(DIST)/*.rpm

# What every architecture ships the same: completions, man pages, copyright. Generated
# by a baton built for this machine.
package-stage:
	rm -rf $(PKG_STAGE) && mkdir -p $(PKG_STAGE)/completions $(PKG_STAGE)/man
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(PKG_STAGE)/baton ./cmd/baton
	$(PKG_STAGE)/baton completion bash > $(PKG_STAGE)/completions/baton.bash
	$(PKG_STAGE)/baton completion zsh > $(PKG_STAGE)/completions/_baton
	$(PKG_STAGE)/baton completion fish > $(PKG_STAGE)/completions/baton.fish
	$(PKG_STAGE)/baton man $(PKG_STAGE)/man
	gzip -9n $(PKG_STAGE)/man/*.1
	cp packaging/copyright $(PKG_STAGE)/copyright
	if [ -f LICENSE ]; then printf '\n' >> $(PKG_STAGE)/copyright && cat LICENSE >> $(PKG_STAGE)/copyright; fi

$(addprefix package-,$(PKG_ARCHS)): package-%: package-stage
	CGO_ENABLED=0 GOOS=linux GOARCH=$* $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(DIST)/linux_$*/baton ./cmd/baton
	BATON_VERSION='$(PKG_VERSION)' BATON_ARCH=$* BATON_BIN=$(DIST)/linux_$*/baton BATON_STAGE=$(PKG_STAGE) \
	BATON_MAINTAINER='$(PKG_MAINTAINER)' $(GO) tool nfpm package --config packaging/nfpm.yaml \
		--packager deb --target '$(DIST)/baton_$(PKG_VERSION)_$*.deb'
	BATON_VERSION='$(PKG_VERSION)' BATON_ARCH=$* BATON_BIN=$(DIST)/linux_$*/baton BATON_STAGE=$(PKG_STAGE) \
	BATON_MAINTAINER='$(PKG_MAINTAINER)' $(GO) tool nfpm package --config packaging/nfpm.yaml \
		--packager rpm --target '$(DIST)/baton-$(PKG_VERSION).$(call rpmarch,$*).rpm'

# The fleet test bed (internal/testfleet): real systemd-nspawn hosts, etcd, HAProxy.
.PHONY: demo-live bench-rollout

demo-live: demo

bench-rollout: ## (root) rollout time vs its floor, failed requests, revert time, on 3 and 5 hosts and without drain
	$(GO) test -run '^$$' -bench BenchmarkRollout -benchtime 1x -timeout 30m ./internal/testfleet/

# Faults on the fleet test bed (internal/chaos). CI runs the scenario suite (TestFaults)
# with the other tests; the random run is for people, replayed with its seed.
.PHONY: chaos
DURATION ?= 10m
SEED     ?= 0
chaos: ## (root) rollouts of good and bad releases for DURATION (default 10m) under random faults (SEED= replays); prints transactions, faults, violations
	$(GO) test -count=1 -run '^TestChaos$$' -v -timeout 3h ./internal/chaos/ -chaos.duration=$(DURATION) -chaos.seed=$(SEED)
