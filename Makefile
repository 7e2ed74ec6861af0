# pgtripwire — build, test, lint, bench, demo.
# `make test` and `make demo` need PostgreSQL server binaries (14+) on the machine;
# scripts/install-deps.sh installs them on Debian/Ubuntu when missing, and
# scripts/install-postgres.sh a build of every supported major version (14 to 18) into
# .postgresql/ for the compatibility suite.

GO            ?= go
GOLANGCI_LINT_VERSION ?= v2.15.0
BIN           := $(CURDIR)/bin
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS       := -X github.com/pgtripwire/pgtripwire/detector/buildinfo.Version=$(VERSION)

FUZZTIME      ?= 5m

# PG names the PostgreSQL major version `make demo` runs (make demo PG=17); empty means
# the machine's newest server. COMPAT_VERSIONS are those `make compat` tests.
PG            ?=
COMPAT_VERSIONS ?= 14 15 16 17 18

.PHONY: all build test compat lint bench bench-canary bench-wal bench-log bench-storm bench-fleet bench-ha chaos fuzz demo deps deps-demo clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/pgtripwire ./cmd/pgtripwire

# Every package, race detector on, real PostgreSQL clusters, Prometheus and Alertmanager
# started by the tests, on one PostgreSQL version (the machine's, 15 in CI); then the
# compatibility suite on every supported version. Installs what is missing first
# (scripts/install-deps.sh). sqlmap too: PGTRIPWIRE_REQUIRE_SQLMAP makes its absence a
# failure, not a skip.
test: deps
	PGTRIPWIRE_REQUIRE_SQLMAP=1 $(GO) test -race -count=1 -timeout 20m ./...
	GO=$(GO) ./scripts/compat-test.sh $(COMPAT_VERSIONS)

# The compatibility suite alone (scripts/compat-tests.txt): setup, doctor, each source,
# canaries and discover against each supported PostgreSQL major version.
compat: deps
	GO=$(GO) ./scripts/compat-test.sh $(COMPAT_VERSIONS)

lint: $(BIN)/golangci-lint
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/golangci-lint run ./...

$(BIN)/golangci-lint:
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# Benchmarks against a real server (5,000 pg_stat_statements entries); see README.
# The poll benchmark fills a real server with 5,000 statements: 20 polls are plenty.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 20x -count 1 ./detector/source/statements/
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./detector/classify/ ./detector/redact/ ./rules/...
	$(GO) test -run '^$$' -bench . -benchtime 200x -count 1 ./detector/evidence/

# Overhead of the detector (every source at 1 s) on pgbench select-only and tpcb-like,
# 2 clients, alternating runs with and without it on one server (issue #6, acceptance 4).
# Four 30 s runs per workload; PGTRIPWIRE_BENCH_SECONDS shortens them. First, the CPU
# each polling source costs per poll, server and detector side, while pgbench tpcb-like
# runs (BenchmarkSourceCPU, docs/sources.md; PGTRIPWIRE_CPU_SECONDS, default 30 per source).
.PHONY: bench-overhead
bench-overhead:
	$(GO) test -run '^$$' -tags overhead -bench '^Benchmark(SourceCPU|Overhead)$$' -benchtime 1x -count 1 -timeout 30m ./detector/source/activity/

# Cost of the canary policy on a 200,000-row table, with against without (docs/canary.md).
bench-canary:
	$(GO) test -run '^$$' -bench 'Canary/PointLookup' -benchtime 20000x -count 1 ./detector/canary/
	$(GO) test -run '^$$' -bench 'Canary/CanaryRows' -benchtime 5000x -count 1 ./detector/canary/
	$(GO) test -run '^$$' -bench 'Canary/FullScan' -benchtime 50x -count 1 ./detector/canary/

# Drain 300,000 row changes from a pgoutput slot: the WAL source against pg_recvlogical
# on an identical slot, same run, alternating who goes first; prints the rate ratio.
bench-wal:
	$(GO) test -run '^$$' -bench BenchmarkDrain -benchtime 2x -count 1 -v ./detector/source/wal/ | grep -v 'logger.go'

# An alert storm: 1,000 and 3,000 roles each reading in bulk at once, without and with a
# real Alertmanager; prints the seconds until every alert is in the alert log and in
# Alertmanager, and the CPU seconds (issue #20: <= 10 s and <= 5 s of CPU at 3,000).
bench-storm:
	$(GO) test -run '^$$' -bench BenchmarkAlertStorm -benchtime 1x -count 1 ./detector/ | grep -v 'logger.go'

# One detector watching 100 databases of one cluster and its hot standby, every source
# at 1 s (issue #17 acceptance 3): detector CPU (% of a core) and RSS, the servers' CPU
# per poll, and the time from a bulk read in database 73 to its page. About 3 minutes.
bench-fleet:
	$(GO) test -run '^$$' -bench BenchmarkFleet -benchtime 1x -count 1 -timeout 20m ./detector/ | grep -v 'logger.go'

# What keeping a target's state in the pgtripwire schema costs at steady state (issue #18
# acceptance 3): rule-state writes per second, the stored state's size, the WAL it makes.
# About 90 seconds.
bench-ha:
	$(GO) test -run '^$$' -bench BenchmarkHAState -benchtime 1x -count 1 -timeout 10m ./detector/ | grep -v 'logger.go'

# kill -9 at random points of a 10-minute mixed workload (about 20 kills): every read and
# change paged once, every alert resolved once (issue #20; make test runs 45 s of it).
chaos:
	PGTRIPWIRE_CHAOS=10m $(GO) test -count=1 -timeout 30m -run TestChaosKillNineDuringAMixedWorkload -v ./cmd/pgtripwire/ | grep -v 'logger.go'

# Read a 100 MB jsonlog backlog through the log source (parse, events, redaction,
# classification, hand-over); prints MB/s (issue #16: at least 50).
bench-log:
	$(GO) test -run '^$$' -bench BenchmarkBacklog -benchtime 3x -count 1 ./detector/source/log/

# Fuzz the parsers (SQL classification, config, rule files, pgoutput, DDL and canary
# messages, the server log's jsonlog, csvlog and syslog) longer than the seed corpora
# `make test` runs.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzClassify -fuzztime $(FUZZTIME) ./detector/classify/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./detector/config/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./rules/rulefmt/
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./detector/source/wal/
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./detector/ddlmsg/
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./detector/canary/
	$(GO) test -run '^$$' -fuzz FuzzJSONLog -fuzztime $(FUZZTIME) ./detector/source/log/
	$(GO) test -run '^$$' -fuzz FuzzCSVLog -fuzztime $(FUZZTIME) ./detector/source/log/
	$(GO) test -run '^$$' -fuzz FuzzSyslog -fuzztime $(FUZZTIME) ./detector/source/log/

demo: deps-demo
	PGTRIPWIRE_PG_VERSION=$(PG) $(GO) run -ldflags '$(LDFLAGS)' ./cmd/pgtripwire demo --log-format console --log-level warn

# Install the system packages the tests need (PostgreSQL server binaries, Prometheus,
# Alertmanager), or only what the demo needs (PostgreSQL); each does nothing when they
# are there.
deps:
	./scripts/install-deps.sh

deps-demo:
	PGTRIPWIRE_PG_VERSION=$(PG) ./scripts/install-deps.sh --demo

clean:
	rm -rf $(BIN)
