SHELL := /bin/bash
# netvol build and test entry points. `make test` is the README's test command
# and what CI runs: static checks, unit tests, then the end-to-end suites.

GO          ?= go
BIN         ?= bin/netvol
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $$($(GO) env GOPATH)/bin/staticcheck)
PKGS        := ./...

.PHONY: all build plugin deps test check vet staticcheck fmt-check unit e2e bench fuzz clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/netvol

# The managed plugin's directory (config.json + rootfs/), made without a
# registry: docker plugin create netvol:dev build/plugin
PLUGIN_DIR ?= build/plugin
plugin:
	bash scripts/mkplugin.sh $(PLUGIN_DIR)

# What the tests need (Debian packages, staticcheck): installs what is
# missing, as root; does nothing, and needs no root, when nothing is.
deps:
	GO=$(GO) bash scripts/deps.sh

# deps first, also under make -j.
test: deps
	$(MAKE) check unit e2e

check: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags e2e ./e2e/...

staticcheck:
	$(STATICCHECK) $(PKGS)
	$(STATICCHECK) -tags e2e ./e2e/...

unit:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

# End-to-end suites: node VMs with a real kernel, dockerd, nfs-ganesha, qemu
# tools. Needs root and the packages `make deps` installs.
e2e: build plugin
	$(GO) test -tags e2e -count=1 -timeout 25m -v ./e2e/...

# Benchmarks: netvol beside its reference (qemu-img bench / qemu-nbd; for
# the userspace attach, the same chain over a local qcow2 image).
bench:
	bash bench/qcow2-vs-qemu.sh
	bash bench/nbd-vs-qemu-nbd.sh
	$(GO) test ./nbd -run '^$$' -bench . -benchtime 2s
	NBD_BENCH=1 $(GO) test ./nbd -run TestQemuImgBench -v -count=1
	bash bench/userspace-attach.sh

# Short fuzzing pass over every parser; FUZZTIME per target.
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./qcow2 -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME)
	$(GO) test ./nbd -run '^$$' -fuzz '^FuzzReadRequest$$' -fuzztime $(FUZZTIME)
	$(GO) test ./nbd -run '^$$' -fuzz '^FuzzOption$$' -fuzztime $(FUZZTIME)
	$(GO) test ./nbd -run '^$$' -fuzz '^FuzzClientHandshake$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/units -run '^$$' -fuzz '^FuzzParseSize$$' -fuzztime $(FUZZTIME)
	$(GO) test ./volume -run '^$$' -fuzz '^FuzzParseOptions$$' -fuzztime $(FUZZTIME)
	$(GO) test ./qcow2 -run '^$$' -fuzz '^FuzzReadWAL$$' -fuzztime $(FUZZTIME)
	$(GO) test ./qcow2 -run '^$$' -fuzz '^FuzzZeroing$$' -fuzztime $(FUZZTIME)
	$(GO) test ./nfs -run '^$$' -fuzz '^FuzzParseExport$$' -fuzztime $(FUZZTIME)
	$(GO) test ./server/api -run '^$$' -fuzz '^FuzzParseSize$$' -fuzztime $(FUZZTIME)
	$(GO) test ./server/api -run '^$$' -fuzz '^FuzzParseServers$$' -fuzztime $(FUZZTIME)

clean:
	rm -rf bin build
