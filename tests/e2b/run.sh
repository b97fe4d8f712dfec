#!/usr/bin/env bash
# E2B conformance: the official `e2b` npm SDKs (versions pinned in
# package-lock.json), unmodified, against `hearth dev` started here, twice:
#
#   1. conformance.test.mjs and template.test.mjs with e2b 2.x, and
#      codeinterp.test.mjs with @e2b/code-interpreter, over plain HTTP
#      (E2B_API_URL, E2B_SANDBOX_URL and E2B_VOLUME_API_URL, the 2.x
#      overrides);
#   2. generations.test.mjs with e2b 2.x and e2b 1.x ("e2b-v1"), and
#      codeinterp-tls.test.mjs with @e2b/code-interpreter, over HTTPS on
#      the test domain hearth.test, the way hosted E2B is reached: only
#      E2B_DOMAIN is set, so the SDKs call https://api.hearth.test and
#      https://<port>-<id>.hearth.test on port 443. hearth listens on
#      <random 127.x.y.z>:443 with a certificate from a CA made for the run
#      (NODE_EXTRA_CA_CERTS) and resolve.cjs maps *.hearth.test to that
#      address (binding port 443 needs root or CAP_NET_BIND_SERVICE).
#
#   tests/e2b/run.sh                 # uses $HEARTH_IMAGES_DIR, else /var/tmp/hearth-test
#   HEARTH_IMAGES_DIR=DIR tests/e2b/run.sh
#   E2B_SUITES=generations tests/e2b/run.sh   # one stage (conformance, generations)
#   E2B_SDKS=e2b-v1 E2B_SUITES=generations tests/e2b/run.sh   # one SDK
#   HEARTH_BENCH=1 tests/e2b/run.sh   # also the measurements (code-interpreter cold boot vs template)
#
# Guest images are reused from $HEARTH_IMAGES_DIR/images (built there once
# with `bin/hearth image build --data-dir DIR` when missing). The server gets
# a fresh data dir and a free loopback port, and is always stopped at the
# end. Extra arguments go to `node --test` (e.g. --test-name-pattern=files).
# KEEP_DATA=1 keeps the data dir (and the server log) for inspection;
# HEARTH_BIN runs another hearth binary (default: bin/hearth).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

images_dir=${HEARTH_IMAGES_DIR:-${TEST_DATA_DIR:-/var/tmp/hearth-test}}
hearth=${HEARTH_BIN:-$root/bin/hearth}

log() { printf 'e2b: %s\n' "$*" >&2; }

command -v node >/dev/null || { log "node is required (Node 18+)"; exit 1; }
command -v npm >/dev/null || { log "npm is required"; exit 1; }

if [[ ! -x $hearth ]]; then
	log "building bin/hearth"
	go build -o "$hearth" ./cmd/hearth
fi
if [[ ! -d $images_dir/images || ! -f $images_dir/images/code-interpreter/manifest.json ]]; then
	log "no (or no code-interpreter) guest images in $images_dir/images: building them (once)"
	"$hearth" image build --data-dir "$images_dir"
fi

log "building tests/e2b/ociregistry (template.test.mjs's private registry)"
root_tmp_bin=$(mktemp -d "${TMPDIR:-/tmp}/hearth-e2b-bin.XXXXXX")
go build -o "$root_tmp_bin/ociregistry" ./tests/e2b/ociregistry

log "installing the SDK from the lockfile"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

root_tmp=$(mktemp -d "${TMPDIR:-/tmp}/hearth-e2b.XXXXXX")
suites=${E2B_SUITES:-conformance generations}
pid=
data=
server_log=

stop_hearth() {
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		log "stopping hearth dev (pid $pid)"
		kill -INT "$pid" 2>/dev/null || true
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.3; done
		if kill -0 "$pid" 2>/dev/null; then
			log "hearth dev did not stop in 30 s: killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	fi
	pid=
}

cleanup() {
	local rc=$?
	stop_hearth
	stop_egress_upstream
	if [[ $rc -ne 0 && -n $server_log && -f $server_log ]]; then
		log "last lines of the server log ($server_log):"
		tail -n 40 "$server_log" >&2 || true
	fi
	if [[ ${KEEP_DATA:-} == 1 ]]; then
		log "data dirs kept: $root_tmp"
	else
		# The agent may leave its rootfs pool (an xfs loop mount) mounted
		# for the next start; these data dirs have no next start.
		if command -v findmnt >/dev/null; then
			# (grep finds nothing when the agent released the pool itself)
			findmnt -rn -o TARGET | { grep -F "$root_tmp/" || true; } | sort -r | while read -r m; do
				umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
			done
		fi
		rm -rf "$root_tmp" 2>/dev/null || log "could not remove all of $root_tmp"
	fi
	rm -rf "$root_tmp_bin"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_hearth NAME HEALTH_URL [CURL_ARGS...] -- [HEARTH_DEV_ARGS...]:
# hearth dev with a fresh data dir, waited for until HEALTH_URL answers.
start_hearth() {
	local name=$1 health=$2
	shift 2
	local curl_args=()
	while [[ $1 != -- ]]; do curl_args+=("$1"); shift; done
	shift
	data=$root_tmp/$name
	mkdir -p "$data"
	server_log=$data/hearth.log
	log "starting hearth dev ($name, data $data, images from $images_dir): $*"
	"$hearth" dev --data-dir "$data" --images-from "$images_dir" "$@" >"$server_log" 2>&1 &
	pid=$!
	for i in $(seq 1 600); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "hearth dev exited during start-up"
			exit 1
		fi
		if curl -fsS "${curl_args[@]}" "$health" >/dev/null 2>&1 && [[ -s $data/dev-credentials.json ]]; then
			break
		fi
		if [[ $i -eq 600 ]]; then
			log "hearth dev did not become healthy in 120 s"
			exit 1
		fi
		sleep 0.2
	done
	api_key=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).api_key)' "$data/dev-credentials.json")
}

sdk_version() { node -e 'console.log(require(process.argv[1]).version)' "$here/node_modules/$1/package.json"; }

# Make sure nothing sends sandbox traffic elsewhere.
unset E2B_DOMAIN E2B_DEBUG E2B_API_URL E2B_SANDBOX_URL E2B_VOLUME_API_URL

# start_egress_upstream: the egress-rules scenario's "internet" server
# (conformance.test.mjs): HTTPS for *.egress.test in a network namespace of
# its own (guests reach no address of the host itself), which hearth dev
# opens to sandboxes with HEARTH_EGRESS_ALLOW_PRIVATE and whose CA its
# agent trusts through SSL_CERT_FILE (the system bundle plus that CA).
# Needs root and ip(8); without them the scenario checks validation only.
egress_up=
egress_up_pid=
start_egress_upstream() {
	[[ $(id -u) -eq 0 ]] && command -v ip >/dev/null || return 0
	egress_up=e2bup$$
	local net=10.213.$((RANDOM % 250)) dir=$root_tmp/egress-upstream
	mkdir -p "$dir"
	(cd "$root" && go run ./tests/e2b/gencert "$dir" egress.test)
	cat /etc/ssl/certs/ca-certificates.crt "$dir/ca.pem" >"$dir/roots.pem" 2>/dev/null || cp "$dir/ca.pem" "$dir/roots.pem"
	ip netns add "$egress_up"
	ip link add "${egress_up}h" type veth peer name "${egress_up}n" netns "$egress_up"
	ip addr add "$net.1/30" dev "${egress_up}h"
	ip link set "${egress_up}h" up
	ip -n "$egress_up" addr add "$net.2/30" dev "${egress_up}n"
	ip -n "$egress_up" link set "${egress_up}n" up
	ip -n "$egress_up" link set lo up
	ip netns exec "$egress_up" node "$here/egress-upstream.mjs" "$net.2" "$dir/cert.pem" "$dir/key.pem" >"$dir/server.log" 2>&1 &
	egress_up_pid=$!
	export HEARTH_EGRESS_ALLOW_PRIVATE=$net.0/30 SSL_CERT_FILE=$dir/roots.pem HEARTH_TEST_EGRESS_UPSTREAM=$net.2
	for _ in $(seq 1 100); do grep -q "egress upstream on" "$dir/server.log" && return 0; sleep 0.1; done
	log "the egress upstream did not start: $(cat "$dir/server.log")"
	exit 1
}

stop_egress_upstream() {
	if [[ -n $egress_up_pid ]]; then kill "$egress_up_pid" 2>/dev/null || true; wait "$egress_up_pid" 2>/dev/null || true; fi
	if [[ -n $egress_up ]]; then ip netns del "$egress_up" 2>/dev/null || true; fi
	egress_up= egress_up_pid=
	unset HEARTH_EGRESS_ALLOW_PRIVATE SSL_CERT_FILE HEARTH_TEST_EGRESS_UPSTREAM
}

if [[ " $suites " == *" conformance "* ]]; then
	port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
	url=http://127.0.0.1:$port
	start_egress_upstream
	start_hearth plain "$url/healthz" -- --listen "127.0.0.1:$port"
	# This hearth dev bakes code-interpreter-v1 at start (the
	# code-interpreter suite waits for it).
	log "conformance suite with e2b $(sdk_version e2b) and @e2b/code-interpreter $(sdk_version @e2b/code-interpreter) over $url"
	(cd "$here" && E2B_API_URL=$url E2B_SANDBOX_URL=$url E2B_VOLUME_API_URL=$url E2B_API_KEY=$api_key HEARTH_SERVER_LOG=$server_log \
		HEARTH_TEST_REGISTRY_BIN=$root_tmp_bin/ociregistry HEARTH_IMAGES_DIR=$images_dir HEARTH_TEST_DATA_DIR=$data \
		node --test --test-concurrency=1 --test-reporter=spec "$@" conformance.test.mjs template.test.mjs codeinterp.test.mjs)
	stop_hearth
	stop_egress_upstream
fi

if [[ " $suites " == *" generations "* ]]; then
	if [[ $(id -u) -ne 0 ]] && (($(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024) > 443)); then
		log "the generations stage serves HTTPS on port 443, as the 1.x SDKs require: run as root, or E2B_SUITES=conformance"
		exit 1
	fi
	domain=hearth.test
	certs=$root_tmp/certs
	mkdir -p "$certs"
	(cd "$root" && go run ./tests/e2b/gencert "$certs" "$domain")
	# A loopback address of its own, so port 443 is free whatever else runs.
	ip=127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1)).$((RANDOM % 250 + 1))
	start_hearth tls "https://api.$domain/healthz" --cacert "$certs/ca.pem" --resolve "api.$domain:443:$ip" -- \
		--listen "$ip:443" --domain "$domain" --tls-cert "$certs/cert.pem" --tls-key "$certs/key.pem"
	for sdk in ${E2B_SDKS:-e2b e2b-v1}; do
		log "generations suite with $sdk $(sdk_version "$sdk") over https://api.$domain ($ip:443)"
		(cd "$here" && E2B_SDK=$sdk E2B_DOMAIN=$domain E2B_API_KEY=$api_key \
			NODE_EXTRA_CA_CERTS=$certs/ca.pem HEARTH_TEST_DOMAIN=$domain HEARTH_TEST_IP=$ip \
			node --require ./resolve.cjs --test --test-concurrency=1 --test-reporter=spec "$@" generations.test.mjs)
	done
	# This hearth dev bakes code-interpreter-v1 too (in the background,
	# while the generations above run).
	log "@e2b/code-interpreter $(sdk_version @e2b/code-interpreter) over https://49999-<id>.$domain"
	(cd "$here" && E2B_DOMAIN=$domain E2B_API_KEY=$api_key NODE_EXTRA_CA_CERTS=$certs/ca.pem \
		HEARTH_TEST_DOMAIN=$domain HEARTH_TEST_IP=$ip \
		node --require ./resolve.cjs --test --test-concurrency=1 --test-reporter=spec "$@" codeinterp-tls.test.mjs)
	stop_hearth
fi
