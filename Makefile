# Spool: see README.md. Every target works on a fresh machine with Go and Node.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
export GOWORK := $(CURDIR)/go.work

MODULES := gen platform ingestor dispatcher cli sink local e2e deploy
BIN := $(CURDIR)/bin

.PHONY: all deps tools generate check-generate lint build up down demo test chaos bench clean

all: build

## deps: install the local emulators (npm, pinned by local/package-lock.json)
deps: local/node_modules/.installed
local/node_modules/.installed: local/package.json local/package-lock.json
	cd local && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## tools: build pinned buf, protoc plugins and grpcurl into bin/
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl
$(BIN)/buf: tools/buf/go.mod
	cd tools/buf && GOWORK=off go build -o $(BIN)/ github.com/bufbuild/buf/cmd/buf
$(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc: tools/protoc/go.mod
	cd tools/protoc && GOWORK=off go build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
$(BIN)/grpcurl: tools/grpcurl/go.mod
	cd tools/grpcurl && GOWORK=off go build -o $(BIN)/ github.com/fullstorydev/grpcurl/cmd/grpcurl

## generate: regenerate gen/ from proto/
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	rm -rf gen/spool
	PATH=$(BIN):$$PATH $(BIN)/buf generate

## lint: buf lint, gofmt and go vet on every module
lint: $(BIN)/buf
	$(BIN)/buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	for m in $(MODULES); do (cd $$m && go vet ./...); done

## check-generate: fail when gen/ is not what proto/ generates
check-generate: generate
	@git diff --exit-code --stat -- gen/ || { echo "gen/ is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/)" || { git status --porcelain -- gen/; echo "gen/ has untracked generated files"; exit 1; }

## build: binaries into bin/
CMDS := ingestor/cmd/ingestor dispatcher/cmd/dispatcher sink/cmd/sink cli/cmd/spool local/cmd/spool-stack
build:
	go build -o $(BIN)/ $(addprefix github.com/spoolhq/spool/,$(CMDS))

## up: start the local stack in the background; endpoints in .spool/stack.env
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
PKGS := $(foreach m,platform ingestor dispatcher cli sink local e2e deploy,github.com/spoolhq/spool/$(m)/...)
FUZZTIME ?= 20s
test: deps tools check-generate lint build
	SPOOL_BIN_DIR=$(BIN) SPOOL_GRPCURL=$(BIN)/grpcurl SPOOL_E2E_ROWS=20000 go test -count=1 -timeout 25m $(PKGS)
	cd ingestor && go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/csvread/
	cd ingestor && go test -run '^$$' -fuzz '^FuzzValidate$$' -fuzztime $(FUZZTIME) ./internal/profile/

## chaos: the 50 000-row run, the chaos runs of #3 and the failing-destination runs of #4 at full size (make test runs them reduced)
CHAOS_ROWS ?= 20000
chaos: deps build
	SPOOL_BIN_DIR=$(BIN) SPOOL_CHAOS_ROWS=$(CHAOS_ROWS) SPOOL_CHAOS_INGEST_ROWS=50000 SPOOL_FAILURE_ROWS=5000 SPOOL_RATE_ROWS=5000 \
	  SPOOL_E2E_ROWS=50000 go test -count=1 -v -timeout 90m -run 'Chaos|LargeFile|RejectedRows|SIGTERM|DestinationDown|Throttled' github.com/spoolhq/spool/e2e

## bench: the ingestor memory benchmarks (1 M rows vs 10 k rows; a 1 GiB unterminated quote) and the ledger's cost per row
bench: deps
	cd ingestor && go test -run '^$$' -bench 'IngestRSS|UnterminatedQuoteRSS' -benchtime 1x -timeout 40m ./bench/
	cd dispatcher && go test -run '^$$' -bench LedgerWrites -benchtime 3x -timeout 10m ./internal/ledger/

clean:
	rm -rf bin .spool
