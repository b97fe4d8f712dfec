#!/usr/bin/env bash
# Builds the dashboard's front end (web/, React + Vite) into web/static/app,
# which web/embed.go embeds into the hearth binary: run it before `go build`
# (make run and make test do). Installs nothing globally: npm ci puts the
# locked dependencies in web/node_modules.
#
#   scripts/web.sh            build when the sources changed since the last build
#   scripts/web.sh --force    always build
set -euo pipefail
cd "$(dirname "$0")/../web"

if ! command -v npm >/dev/null 2>&1; then
	echo "scripts/web.sh: npm is missing (install Debian's nodejs and npm: apt-get install -y nodejs npm)" >&2
	exit 1
fi

out=static/app/index.html
if [[ "${1:-}" != --force && -f $out ]] &&
	[[ -z $(find src public index.html vite.config.js package.json package-lock.json -newer "$out" -print -quit) ]]; then
	echo "dashboard up to date ($out)"
	exit 0
fi

# npm ci only when the lockfile changed since the last install.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
	npm ci --no-audit --no-fund --loglevel=error
fi
npx --no-install vite build --logLevel warn
echo "dashboard built into web/$(dirname "$out")"
