# dcroll: the two set-up commands are `make demo` and `make test`.
# Both install what a fresh Debian machine lacks (ZooKeeper, aria2) first.
GO      ?= go
BIN     := bin
PKGS    := ./...
TESTFLAGS ?= -race -timeout 18m

.PHONY: all build deps test test-short test-faults vet fuzz bench bench-distrib bench-scale demo zk clean

all: build

deps:
	@./scripts/install-deps.sh

build:
	$(GO) build -o $(BIN)/dcroll ./cmd/dcroll

vet:
	$(GO) vet $(PKGS)

# make test: vet plus every test, including integration tests against a
# real ZooKeeper and real agent processes.
# The fault matrix (with the ETA and signed-HEAD tests) and the dashboard's
# browser tests run after the other packages, one package at a time: their
# scenarios time health deadlines of real processes, which two cores
# shared with the rest of the suite would stretch.
SERIAL := ./integration/faults/ ./integration/dashboard/
test: deps vet
	$(GO) test $(TESTFLAGS) $$($(GO) list $(PKGS) | grep -v -e /integration/faults -e /integration/dashboard)
	$(GO) test $(TESTFLAGS) -p 1 $(SERIAL)

test-short:
	$(GO) test -short $(PKGS)

# make test-faults: the fault matrix alone (integration/faults: a 3-node
# ZooKeeper ensemble, real agents, judged from the services' own logs;
# about 5 minutes on 2 cores). `make test` runs it too.
test-faults: deps
	$(GO) test $(TESTFLAGS) ./integration/faults/

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzParse -fuzztime=60s ./spec/

# make bench: Go micro-benchmarks (spec parse, decision core, tracker
# ranking); the distribution benchmark is bench-distrib (root, ~15 min).
bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./spec/ ./agent/ ./distrib/

# make bench-distrib: dcroll's rack-aware swarm beside aria2c + opentracker,
# a dead chain member, a dead gateway, a dead origin and two data centers,
# on 24 test hosts in network namespaces (needs root, iproute2 and tc;
# ~15 min; bench/README.md).
bench-distrib: deps
	$(GO) run ./bench/distrib -out bench/results

# make bench-scale: ZooKeeper work per rollout step at N = 10, 100, 1000
# agents (in one process, plus 2 real agent processes, on one local
# ZooKeeper); at N=1000 only the first 150 one-at-a-time steps are measured
# and the total extrapolated. No root needed; ~10 min on 2 cores. Smaller:
# make bench-scale SCALEFLAGS="-sizes 10,100".
SCALEFLAGS ?= -sizes 10,100,1000 -steps 150
bench-scale: deps
	$(GO) run ./bench/scale -out bench/results $(SCALEFLAGS)

# make zk: a local ZooKeeper on 127.0.0.1:2181 in the foreground.
zk: deps
	$(GO) run ./cmd/dczk -port 2181 -dir .zk

# make demo: a whole local data center on a real local ZooKeeper.
demo: deps build
	$(GO) run ./cmd/dcdemo -dcroll $(BIN)/dcroll -dir .demo

clean:
	rm -rf $(BIN) .demo .zk
