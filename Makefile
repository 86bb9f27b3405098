# Spool: see README.md. Every target works on a fresh machine with Go and Node.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
export GOWORK := $(CURDIR)/go.work

MODULES := gen platform ingestor dispatcher cli sink local e2e deploy bench
BIN := $(CURDIR)/bin

.PHONY: all deps tools generate check-generate lint release-proto build up down demo test test-unit chaos bench bench-compare clean

all: build

## deps: install the local emulators (npm, pinned by local/package-lock.json)
deps: local/node_modules/.installed
local/node_modules/.installed: local/package.json local/package-lock.json
	cd local && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## tools: build pinned buf, protoc plugins, grpcurl and golangci-lint into bin/
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl $(BIN)/golangci-lint
$(BIN)/buf: tools/buf/go.mod
	cd tools/buf && GOWORK=off go build -o $(BIN)/ github.com/bufbuild/buf/cmd/buf
$(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc: tools/protoc/go.mod
	cd tools/protoc && GOWORK=off go build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
$(BIN)/grpcurl: tools/grpcurl/go.mod
	cd tools/grpcurl && GOWORK=off go build -o $(BIN)/ github.com/fullstorydev/grpcurl/cmd/grpcurl
$(BIN)/golangci-lint: tools/golangci/go.mod
	cd tools/golangci && GOWORK=off go build -o $(BIN)/ github.com/golangci/golangci-lint/v2/cmd/golangci-lint

## generate: regenerate gen/ from proto/
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	rm -rf gen/spool
	PATH=$(BIN):$$PATH $(BIN)/buf generate

## lint: buf lint, buf breaking against the released contract, gofmt, go vet and golangci-lint
## (.golangci.yml) on every module
# The released contract is proto/released/image.txtpb, a committed buf image of proto/ as last released,
# not a git tag or main: CI lints a fresh clone of main, which may carry no tags, and main against itself
# finds nothing. The image travels with every clone, and its diff shows in review what a release froze.
# Changes since the last release are compared with what clients and queued messages may still hold.
RELEASED_PROTO := proto/released/image.txtpb
LINT_PKGS := $(foreach m,platform ingestor dispatcher cli sink local e2e deploy bench,./$(m)/...)
lint: $(BIN)/buf $(BIN)/golangci-lint
	$(BIN)/buf lint
	$(BIN)/buf breaking --against $(RELEASED_PROTO)
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	for m in $(MODULES); do (cd $$m && go vet ./...); done
	$(BIN)/golangci-lint run $(LINT_PKGS)

## release-proto: freeze proto/ as the released contract that buf breaking compares against; run it
## when cutting a release and commit the image with the release
release-proto: $(BIN)/buf
	$(BIN)/buf build --exclude-source-info -o $(RELEASED_PROTO)

## check-generate: fail when gen/ is not what proto/ generates
check-generate: generate
	@git diff --exit-code --stat -- gen/ || { echo "gen/ is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/)" || { git status --porcelain -- gen/; echo "gen/ has untracked generated files"; exit 1; }

## build: binaries into bin/
CMDS := ingestor/cmd/ingestor dispatcher/cmd/dispatcher sink/cmd/sink cli/cmd/spool local/cmd/spool-stack
build:
	go build -o $(BIN)/ $(addprefix github.com/spoolhq/spool/,$(CMDS))

## up: start the local stack in the background, TLS and tokens on; endpoints and credentials in .spool/stack.env
up: deps build
	$(BIN)/spool-stack up

## down: stop everything `make up` started
down:
	@if [ -x $(BIN)/spool-stack ]; then $(BIN)/spool-stack down; else echo "nothing to stop"; fi

## demo: the whole system on a sample payroll file, then down again
DEMO_ROWS ?= 5000
demo: deps build
	@$(BIN)/spool-stack up
	@trap '$(BIN)/spool-stack down >/dev/null' EXIT; \
	  $(BIN)/spool-stack sample -rows $(DEMO_ROWS) -o .spool/payroll-sample.csv && \
	  echo "sending .spool/payroll-sample.csv ($(DEMO_ROWS) rows) through 2 dispatchers" && \
	  $(BIN)/spool send .spool/payroll-sample.csv && \
	  $(BIN)/spool-stack check -rows $(DEMO_ROWS)

## test: lint, generated-code check, unit, integration and end-to-end tests, then each fuzz target for FUZZTIME
## The DynamoDB tests run on dynalite, then again on DynamoDB Local (AWS's own emulator; needs Java):
## every package whose tests start a DynamoDB emulator, and the short end-to-end runs.
PKGS := $(foreach m,platform ingestor dispatcher cli sink local e2e deploy bench,github.com/spoolhq/spool/$(m)/...)
# e2e is left out of the package list: its short runs on DynamoDB Local are DYNAMODB_E2E.
DYNAMODB_PKGS = $(filter-out ./e2e/,$(addprefix ./,$(sort $(dir $(shell git grep -l -e 'emulator\.DynamoDB' -e 'emutest\.Table' -- '*_test.go')))))
DYNAMODB_E2E := ^(TestSendExactlyOnce|TestBusinessKeyAcrossFiles)$$
FUZZTIME ?= 20s
test: deps tools check-generate lint build
	SPOOL_DYNAMODB_EMULATOR=dynalite SPOOL_BIN_DIR=$(BIN) SPOOL_GRPCURL=$(BIN)/grpcurl SPOOL_E2E_ROWS=20000 go test -count=1 -timeout 25m $(PKGS)
	SPOOL_DYNAMODB_EMULATOR=dynamodb-local go test -count=1 -timeout 15m $(DYNAMODB_PKGS)
	SPOOL_DYNAMODB_EMULATOR=dynamodb-local SPOOL_BIN_DIR=$(BIN) go test -count=1 -timeout 10m -run '$(DYNAMODB_E2E)' ./e2e
	cd ingestor && go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/csvread/
	cd ingestor && go test -run '^$$' -fuzz '^FuzzValidate$$' -fuzztime $(FUZZTIME) ./internal/profile/

## test-unit: the inner loop, well under a minute with a warm build cache: every module's tests with
## -short, which skips each test that starts an emulator (emutest.Start) or a million-row run; no e2e/,
## no lint, no fuzzing. Results are cached as go test caches them; make test stays the full run.
UNIT_PKGS := $(foreach m,platform ingestor dispatcher cli sink local deploy bench,github.com/spoolhq/spool/$(m)/...)
test-unit:
	go test -short -timeout 5m $(UNIT_PKGS)

## chaos: the 50 000-row run, the chaos runs, the failing-destination runs and the fault-proxy runs at full size (make test runs them reduced)
CHAOS_ROWS ?= 20000
chaos: deps build
	SPOOL_BIN_DIR=$(BIN) SPOOL_CHAOS_ROWS=$(CHAOS_ROWS) SPOOL_CHAOS_INGEST_ROWS=50000 SPOOL_FAILURE_ROWS=5000 SPOOL_RATE_ROWS=5000 \
	  SPOOL_FAULT_ROWS=10000 SPOOL_E2E_ROWS=50000 go test -count=1 -v -timeout 120m -run 'Chaos|LargeFile|RejectedRows|SIGTERM|DestinationDown|Throttled|Fault' github.com/spoolhq/spool/e2e

## bench: Spool side by side with its baselines in one table (ingest, delivery vs Little's law and scaling, the seed's loop, random loss, the ledger, the ingestor's memory); fails when a ratio is out of its bound; JSON to bench/results/. Then the delivery path's cost of metrics and tracing (reported)
bench: deps build
	# A ratio out of its bound fails make bench, but only after the benchmarks below have run too.
	@status=0; go run ./bench/cmd/spool-bench -bin $(BIN) || status=$$?; echo $$status > $(BIN)/.bench-status
	# The delivery path with metrics and tracing on vs off (overhead_% per case).
	cd dispatcher && go test -run '^$$' -bench DeliveryObservability -benchtime 10000x -count 3 -timeout 10m ./internal/dispatch/
	# GetJob and a StreamFile of 100 000 rows: plaintext without auth vs TLS + token vs TLS + client certificate.
	# Each reports its modes' time per call and overhead_% over plaintext, the modes taking turns.
	cd ingestor && go test -run '^$$' -bench Auth/GetJob -benchtime 2000x -count 3 -timeout 10m ./internal/ingest/
	cd ingestor && go test -run '^$$' -bench Auth/StreamFile -benchtime 6x -count 3 -timeout 15m ./internal/ingest/
	# Count, which completes every job, against a pass over whole ledger entries and a pass per state (count/… ratios).
	cd dispatcher && go test -run '^$$' -bench LedgerCount -benchtime 5x -timeout 10m ./internal/ledger/
	cd ingestor && go test -run '^$$' -bench RowPath -benchtime 5x -count 3 -timeout 10m ./internal/ingest/
	@status=$$(cat $(BIN)/.bench-status); rm -f $(BIN)/.bench-status; if [ "$$status" != 0 ]; then echo "make bench: spool-bench's table has a ratio out of its bound (above)"; exit 1; fi

## bench-compare: this checkout (uncommitted changes included) against BASE, the two taking turns for COUNT
## rounds: TestLargeFileThreeDispatchers' time (50 000 rows; SPOOL_E2E_ROWS to change it), the ledger
## benchmark and the ingestor's (rows/s and peak RSS at 1 000 000 rows); each figure's rounds and medians, the ratio and whether it is within noise; JSON to
## bench/results/; fails when a figure is slower beyond noise. BASE is checked out in a temporary git worktree.
BASE ?= 1a8c8b8
COUNT ?= 2
bench-compare: deps build
	go run ./bench/cmd/spool-compare -base $(BASE) -count $(COUNT)

clean:
	rm -rf bin .spool
