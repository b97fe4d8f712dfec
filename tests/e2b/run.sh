#!/usr/bin/env bash
# E2B conformance: the official `e2b` npm SDK (version pinned in
# package-lock.json), unmodified, against a `hearth dev` started here.
#
#   tests/e2b/run.sh                 # uses $HEARTH_IMAGES_DIR, else /var/tmp/hearth-test
#   HEARTH_IMAGES_DIR=DIR tests/e2b/run.sh
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
if [[ ! -d $images_dir/images ]]; then
	log "no guest images in $images_dir/images: building them (once)"
	"$hearth" image build --data-dir "$images_dir"
fi

log "installing the SDK from the lockfile"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

data=$(mktemp -d "${TMPDIR:-/tmp}/hearth-e2b.XXXXXX")
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
url=http://127.0.0.1:$port
server_log=$data/hearth.log
pid=

cleanup() {
	local rc=$?
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
	if [[ $rc -ne 0 && -f $server_log ]]; then
		log "last lines of the server log ($server_log):"
		tail -n 40 "$server_log" >&2 || true
	fi
	if [[ ${KEEP_DATA:-} == 1 ]]; then
		log "data dir kept: $data"
	else
		# The agent may leave its rootfs pool (an xfs loop mount) mounted
		# for the next start; this data dir has no next start.
		if command -v findmnt >/dev/null; then
			# (grep finds nothing when the agent released the pool itself)
			findmnt -rn -o TARGET | { grep -F "$data/" || true; } | sort -r | while read -r m; do
				umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
			done
		fi
		rm -rf "$data" 2>/dev/null || log "could not remove all of $data"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting hearth dev on $url (data $data, images from $images_dir)"
"$hearth" dev --data-dir "$data" --listen "127.0.0.1:$port" --images-from "$images_dir" >"$server_log" 2>&1 &
pid=$!

for i in $(seq 1 600); do
	if ! kill -0 "$pid" 2>/dev/null; then
		log "hearth dev exited during start-up"
		exit 1
	fi
	if curl -fsS "$url/healthz" >/dev/null 2>&1 && [[ -s $data/dev-credentials.json ]]; then
		break
	fi
	if [[ $i -eq 600 ]]; then
		log "hearth dev did not become healthy in 120 s"
		exit 1
	fi
	sleep 0.2
done

api_key=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).api_key)' "$data/dev-credentials.json")
export E2B_API_URL=$url E2B_SANDBOX_URL=$url E2B_API_KEY=$api_key
# Make sure nothing sends sandbox traffic elsewhere.
unset E2B_DOMAIN E2B_DEBUG

sdk_version=$(node -e 'console.log(require(process.argv[1]).version)' "$here/node_modules/e2b/package.json")
log "running the conformance suite with e2b $sdk_version"
cd "$here"
node --test --test-concurrency=1 --test-reporter=spec "$@" conformance.test.mjs template.test.mjs
