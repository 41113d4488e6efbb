SHELL := /bin/bash
# thaw's two commands for users: `make run` and `make test`.
# Everything they need is installed by `make deps` (idempotent, cached).

GO       ?= go
BIN      := $(CURDIR)/bin
THAW     := $(BIN)/thaw
UNIT_PKGS = $(shell $(GO) list ./... | grep -v -E '/test(/|$$)')
# Flags for `make run`, e.g. make run ARGS="--sim-startup 10s".
ARGS     ?=

.PHONY: all build run test unit e2e vet deps bench cluster clean

all: build

build:
	$(GO) build -o $(THAW) ./cmd/thaw

## run: build and start `thaw dev` on 127.0.0.1:8080 (prints the API token).
run: build
	$(THAW) dev $(ARGS)

## deps: install everything the tests and the cluster need, into the system
## (Redis from Debian), the repository (bin/, .venv-py, .cache/hf) and the
## cache (the real vLLM's virtualenv: scripts/vllm.sh).
deps:
	bash scripts/deps.sh
	bash scripts/envoy.sh
	bash scripts/chromium.sh
	bash scripts/pyclient.sh
	bash scripts/vllm.sh

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

## unit: unit tests with the race detector.
unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

## e2e: end-to-end tests that start the real thaw, Redis, Envoy and Nomad
## (and the unit tests of their shared harness, test/e2e); then, one
## package at a time so that its CPU load skews no other test's timing, the
## ones on real vLLM: the conformance suite (thaw sim and vLLM held to the
## same tests) and thaw dev / thaw server serving the test model.
E2E_SIM  = ./test/e2e/ ./test/ ./test/envoy/ ./test/nomad/
E2E_VLLM = ./test/conformance/ ./test/vllm/
# e2e_run PACKAGES GO-TEST-FLAGS LOG: run them verbosely into LOG, show the
# outline, fail as go test does.
e2e_run = THAW_BIN=$(THAW) $(GO) test -count=1 $(2) -v $(1) 2>&1 | tee $(3) | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go' ; exit $${PIPESTATUS[0]}
e2e: build
	$(call e2e_run,$(E2E_SIM),-timeout 30m,$(BIN)/e2e.log)
	$(call e2e_run,$(E2E_VLLM),-p 1 -timeout 40m,$(BIN)/e2e-vllm.log)

## test: everything CI runs.
test: deps vet unit e2e

## bench: benchmark scenarios against a real thaw dev (not part of make test);
## writes bench/results/latest.{json,md}.
bench: build
	$(GO) run ./bench/cmd/thawbench -thaw $(THAW) -out bench/results

## cluster: the production topology on loopback, in the foreground: Redis,
## nomad agent -dev with fake GPUs, two thaw server replicas --engine sim on
## 127.0.0.1:8080 and :8081 (one leads), two activators, Envoy on :10000. It
## keeps running when a replica dies. Ctrl-C stops everything.
cluster: build deps
	bash scripts/cluster.sh $(ARGS)

clean:
	rm -rf $(BIN)/thaw $(BIN)/e2e.log $(BIN)/e2e-vllm.log
