#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it:
#   1. unit, store and API tests on SQLite and on a private PostgreSQL
#      cluster, with the race detector;
#   2. VM tests: real QEMU microVMs (TCG where KVM is unusable) booted from
#      guest images built once, then reused, in $TEST_DATA_DIR; the heavy
#      ones carry the build tag `vm`;
#   3. suites that drive `hearth dev` from Node: the official E2B SDK
#      (tests/e2b) and the dashboard in Chromium (tests/browser).
# HEARTH_SKIP_VM=1, HEARTH_SKIP_E2B=1, HEARTH_SKIP_BROWSER=1 leave a stage
# out when iterating locally; CI runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."

TEST_DATA_DIR=${TEST_DATA_DIR:-/var/tmp/hearth-test}
export GOFLAGS=${GOFLAGS:--buildvcs=false}
# Packages whose tests boot VMs when HEARTH_IMAGES_DIR is set.
VM_PACKAGES=(./tests/e2e/... ./tests/crash/... ./tests/multihost/... ./internal/agent/... ./internal/vmm/... ./internal/image/... ./cmd/hearth/...)

stage() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

# With the race detector: nothing here boots a VM (HEARTH_IMAGES_DIR unset),
# so every package runs and VM tests skip themselves. Measured on 2 cores
# (SQLite only): 6m25s with -race against the time without it in the
# issue 15 report.
stage "unit, store and API tests (SQLite and PostgreSQL, -race)"
env -u HEARTH_IMAGES_DIR scripts/pgtest.sh go test -race -count=1 ./...

# deploy/ is its own module (nfpm, go-containerregistry, Helm, Kubernetes
# types): the .deb installs and its units verify, the image answers under
# podman, the chart renders and validates.
stage "deployment: .deb, container image, Helm chart"
(cd deploy && go test -count=1 ./...)

if [[ "${HEARTH_SKIP_VM:-}" != 1 ]]; then
	stage "guest images in $TEST_DATA_DIR"
	bin/hearth image build --data-dir "$TEST_DATA_DIR"

	stage "VM tests (QEMU microVMs)"
	HEARTH_IMAGES_DIR="$TEST_DATA_DIR" go test -count=1 -p 1 -tags vm -timeout 30m "${VM_PACKAGES[@]}"
fi

export HEARTH_IMAGES_DIR="$TEST_DATA_DIR"
if [[ "${HEARTH_SKIP_E2B:-}" != 1 && -x tests/e2b/run.sh ]]; then
	stage "E2B SDK conformance (npm e2b against hearth dev)"
	tests/e2b/run.sh
fi
if [[ "${HEARTH_SKIP_BROWSER:-}" != 1 && -x tests/browser/run.sh ]]; then
	stage "dashboard in Chromium"
	tests/browser/run.sh
fi
stage "all suites passed"
