#!/usr/bin/env bash
# Browser tests of the dashboard: Debian's Chromium, driven by playwright-core
# (never a downloaded browser), against a server started here and stopped at
# the end. Screenshots of every page land in tests/browser/screenshots/.
#
#   HEARTH_IMAGES_DIR      guest images to reuse (default /var/tmp/hearth-test;
#                          build them with: bin/hearth image build --data-dir DIR)
#   HEARTH_BROWSER_STACK   dev (default): `bin/hearth dev`, real microVMs.
#                          devserver: tests/browser/devserver, the same API and
#                          dashboard with envd-on-this-host sandboxes (no VMs;
#                          for front-end work on machines without images).
#   HEARTH_URL             test an already running server instead (then set
#                          HEARTH_ADMIN_EMAIL/HEARTH_ADMIN_PASSWORD yourself).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
export GOFLAGS=${GOFLAGS:--buildvcs=false}

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $CHROMIUM ]]; then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		echo "installing Debian's chromium"
		apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	else
		echo "tests/browser: $CHROMIUM is missing; install it: apt-get install -y chromium" >&2
		exit 1
	fi
fi
export CHROMIUM

if [[ ! -f $here/node_modules/.package-lock.json || $here/package-lock.json -nt $here/node_modules/.package-lock.json ]]; then
	(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

work=$(mktemp -d /tmp/hearth-browser.XXXXXX)
pid=
# leftovers lists processes still using the temp dir (a microVM's command
# line names its files there): VMs run in their own process groups, so a
# server killed hard would leave them behind. The pattern is this run's
# unique directory, so it can only match processes this script started.
leftovers() { pgrep -f -- "$work/" || true; }
cleanup() {
	local p m busy=
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill -INT "$pid" 2>/dev/null || true
		# hearth dev stops its sandboxes before exiting; bounded wait.
		for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	for p in $(leftovers); do
		echo "tests/browser: killing leftover process $p: $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null | cut -c1-160)" >&2
		kill -KILL "$p" 2>/dev/null || true
	done
	# The agent mounts an xfs pool at <data>/rootfs-pool and leaves it
	# mounted on exit (by design, for agent restarts): unmount it, and
	# anything else mounted under the temp dir, deepest first. Never delete
	# through a live mount.
	for m in $(findmnt -rn -o TARGET 2>/dev/null | grep -F -- "$work/" | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || { echo "tests/browser: could not unmount $m" >&2; busy=1; }
	done
	if [[ -n $busy ]]; then
		echo "tests/browser: left $work in place (still mounted)" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

free_port() { node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }

wait_ready() { # url log
	for _ in $(seq 1 240); do
		if curl -fsS -o /dev/null "$1/healthz" 2>/dev/null; then return 0; fi
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "tests/browser: the server exited; its log:" >&2
			tail -n 40 "$2" >&2
			return 1
		fi
		sleep 0.5
	done
	echo "tests/browser: the server did not answer within 2 minutes; its log:" >&2
	tail -n 40 "$2" >&2
	return 1
}

if [[ -z ${HEARTH_URL:-} ]]; then
	scripts/web.sh
	port=$(free_port)
	export HEARTH_URL="http://127.0.0.1:$port"
	log=$work/server.log
	case ${HEARTH_BROWSER_STACK:-dev} in
	dev)
		go build -o bin/hearth ./cmd/hearth
		images=${HEARTH_IMAGES_DIR:-/var/tmp/hearth-test}
		if [[ ! -d $images/images ]]; then
			echo "tests/browser: no guest images in $images (build them: bin/hearth image build --data-dir $images)" >&2
			exit 1
		fi
		echo "starting hearth dev on $HEARTH_URL (images from $images)"
		# No code-interpreter-v1 bake: its platform sandbox would show on
		# the admin pages and take a core for a minute; nothing here uses it.
		bin/hearth dev --data-dir "$work/data" --listen "127.0.0.1:$port" --images-from "$images" --code-interpreter=false >"$log" 2>&1 &
		pid=$!
		;;
	devserver)
		go build -o "$work/devserver" ./tests/browser/devserver
		echo "starting tests/browser/devserver on $HEARTH_URL (no VMs: sandboxes are envd servers on this host)"
		"$work/devserver" --data-dir "$work/data" --listen "127.0.0.1:$port" >"$log" 2>&1 &
		pid=$!
		;;
	*)
		echo "tests/browser: HEARTH_BROWSER_STACK must be dev or devserver" >&2
		exit 2
		;;
	esac
	wait_ready "$HEARTH_URL" "$log"
	# The dashboard lives under /app/ (the E2B-compatible API owns
	# /sandboxes at the root); / redirects there.
	if ! curl -fsSL "$HEARTH_URL/" | grep -q 'id="root"' || ! curl -fsS "$HEARTH_URL/app/sandboxes" | grep -q 'id="root"'; then
		echo "tests/browser: $HEARTH_URL does not serve the dashboard (GET / and GET /app/sandboxes have no app)." >&2
		echo "  The server must mount dashboard.New and dashboard.WrapAPI (internal/dashboard)," >&2
		echo "  and the front end must be built before the binary (scripts/web.sh)." >&2
		exit 1
	fi
	creds=$work/data/dev-credentials.json
	for _ in $(seq 1 20); do [[ -s $creds ]] && break; sleep 0.5; done
	HEARTH_ADMIN_EMAIL=$(node -e "console.log(require('$creds').email)")
	HEARTH_ADMIN_PASSWORD=$(node -e "console.log(require('$creds').password)")
	export HEARTH_ADMIN_EMAIL HEARTH_ADMIN_PASSWORD
fi

export SCREENSHOT_DIR=${SCREENSHOT_DIR:-$here/screenshots}
rm -rf "$SCREENSHOT_DIR"
cd "$here"
status=0
# Chromium's profile directories go under the temp dir too, so a crashed
# run's browsers are found by leftovers and their files removed.
mkdir -p "$work/tmp"
TMPDIR=$work/tmp node --test --test-concurrency=1 --test-reporter=spec dashboard.test.mjs || status=$?
echo "screenshots: $SCREENSHOT_DIR"
if [[ $status != 0 && -n ${log:-} ]]; then
	echo "--- last server log lines ---"
	tail -n 30 "$log"
fi
exit $status
