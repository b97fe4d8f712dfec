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

.PHONY: all run test deps build images web proto bench clean install deb image

# Packaging (deploy/, its own Go module so nfpm, go-containerregistry and
# Helm stay out of the main build).
VERSION ?= 0.1.0
PREFIX ?= /usr/local
DESTDIR ?=
SYSTEMD_DIR ?= /lib/systemd/system

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

## install: the binary, systemd units and default settings (existing settings are kept).
install: build
	install -D -m 0755 bin/hearth "$(DESTDIR)$(PREFIX)/bin/hearth"
	for u in hearth-server hearth-agent; do \
		sed 's#/usr/bin/hearth#$(PREFIX)/bin/hearth#' deploy/systemd/$$u.service | install -D -m 0644 /dev/stdin "$(DESTDIR)$(SYSTEMD_DIR)/$$u.service"; \
	done
	install -D -m 0644 deploy/debian/sysusers.conf "$(DESTDIR)/usr/lib/sysusers.d/hearth.conf"
	for f in server agent; do \
		[ -e "$(DESTDIR)/etc/hearth/$$f.env" ] || install -D -m 0640 deploy/etc/$$f.env "$(DESTDIR)/etc/hearth/$$f.env"; \
	done
	@if [ -z "$(DESTDIR)" ]; then systemd-sysusers hearth.conf && chgrp hearth /etc/hearth/server.env; \
		[ -d /run/systemd/system ] && systemctl daemon-reload || true; \
		echo "installed: edit /etc/hearth/*.env, then systemctl enable --now hearth-agent hearth-server"; fi

## deb: dist/hearth_$(VERSION)_amd64.deb (binary, units, default settings).
deb: build
	cd deploy && $(GO) run ./cmd/hearth-package deb --binary ../bin/hearth --version $(VERSION) --out ../dist

## image: dist/hearth-image.tar, the control plane's container image (podman load -i ...).
image: web
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/hearth-static ./cmd/hearth
	cd deploy && $(GO) run ./cmd/hearth-package image --binary ../bin/hearth-static --version $(VERSION) --out ../dist/hearth-image.tar

clean:
	rm -rf bin dist

FORCE:
