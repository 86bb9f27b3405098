# Spool: see README.md. Every target works on a fresh machine with Go and Node.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
export GOWORK := $(CURDIR)/go.work

MODULES := gen platform ingestor dispatcher cli sink local e2e deploy
BIN := $(CURDIR)/bin

.PHONY: all deps tools generate lint build up down demo test test-unit test-e2e bench clean

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
