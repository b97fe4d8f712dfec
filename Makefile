# hearth: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
export GOFLAGS ?= -buildvcs=false

# Where `make run` keeps images, the database and secrets.
DATA_DIR ?= $(CURDIR)/.data
LISTEN ?= 127.0.0.1:3000
# Images for the VM tests are built once here and reused between runs.
TEST_DATA_DIR ?= /var/tmp/hearth-test

BINARIES := bin/hearth bin/envd bin/hearth-init

.PHONY: all run test deps build images web proto bench clean

all: build

## run: install what is missing, build binaries and images, start `hearth dev`.
run: deps build images
	bin/hearth dev --data-dir "$(DATA_DIR)" --listen "$(LISTEN)"

## test: install what is missing, then unit, store (SQLite+PostgreSQL), VM and E2B SDK suites.
test: deps build
	scripts/test.sh

deps:
	scripts/deps.sh

build: web $(BINARIES)

# The dashboard (React + Vite) is embedded in bin/hearth: build it first.
# scripts/web.sh skips npm and Vite when nothing changed.
web:
	scripts/web.sh

# Go decides what is stale; these always run `go build`.
bin/hearth: FORCE
	$(GO) build -o $@ ./cmd/hearth
bin/envd: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $@ ./cmd/envd
bin/hearth-init: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $@ ./cmd/hearth-init

images: build
	bin/hearth image build --data-dir "$(DATA_DIR)"

proto:
	$(GO) tool -modfile=tools/go.mod buf generate

bench: build
	scripts/bench.sh

clean:
	rm -rf bin

FORCE:
