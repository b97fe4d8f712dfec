#!/usr/bin/env bash
# Run a command against a private, throw-away PostgreSQL cluster:
#
#   scripts/pgtest.sh go test ./internal/store/...
#
# Installs Debian's `postgresql` package when no server binaries are found,
# creates a cluster in a temporary directory that listens only on a unix
# socket inside that directory, exports HEARTH_TEST_POSTGRES_URL (a
# superuser URL; see internal/store/storetest), runs the command, and always
# stops the cluster and deletes the directory. The exit status is the
# command's.
#
# PostgreSQL refuses to run as root, so under root the server runs as the
# `postgres` system user (created by the Debian package), or as a dedicated
# `hearth-pgtest` system user when that does not exist.
set -euo pipefail

if [[ $# -eq 0 ]]; then
	echo "usage: $0 COMMAND [ARG...]" >&2
	exit 2
fi

# Debian keeps server binaries in /usr/lib/postgresql/<major>/bin (only the
# client wrappers are on PATH); pick the newest major that has initdb.
find_bindir() {
	local d major best="" best_major=-1
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
		major=${d#/usr/lib/postgresql/}
		major=${major%%/*}
		[[ $major =~ ^[0-9]+$ ]] || continue
		if ((major > best_major)); then
			best=$d best_major=$major
		fi
	done
	printf '%s' "$best"
}

bindir=$(find_bindir)
if [[ -z "$bindir" ]]; then
	echo "pgtest: PostgreSQL server not found; installing Debian's postgresql" >&2
	sudo=()
	[[ $EUID -ne 0 ]] && sudo=(sudo)
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
	bindir=$(find_bindir)
	if [[ -z "$bindir" ]]; then
		echo "pgtest: apt-get installed postgresql but no initdb under /usr/lib/postgresql/*/bin" >&2
		exit 1
	fi
fi

# as_pg runs a server-side command as the unprivileged cluster owner.
as_pg=()
if [[ $EUID -eq 0 ]]; then
	owner=postgres
	if ! id -u "$owner" >/dev/null 2>&1; then
		owner=hearth-pgtest
		id -u "$owner" >/dev/null 2>&1 ||
			useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$owner"
	fi
	as_pg=(runuser -u "$owner" --)
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/hearth-pg.XXXXXX")
data=$dir/data
started=0
cleanup() {
	local rc=$?
	if [[ $started -eq 1 ]]; then
		"${as_pg[@]}" "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$dir"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[[ $EUID -eq 0 ]] && chown "$owner" "$dir"

# Run from the temp dir: the cluster owner may not be able to read the
# caller's working directory.
(cd "$dir" && "${as_pg[@]}" "$bindir/initdb" -D "$data" -U hearth --auth=trust \
	--encoding=UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1) || {
	cat "$dir/initdb.log" >&2
	exit 1
}

# Settings go in the config file (no quoting through pg_ctl -o). Durability
# is pointless for a cluster that is deleted in a minute.
cat >>"$data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$dir'
unix_socket_permissions = 0777
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

started=1
(cd "$dir" && "${as_pg[@]}" "$bindir/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null) || {
	cat "$dir/server.log" >&2
	exit 1
}

export HEARTH_TEST_POSTGRES_URL="postgres://hearth@/postgres?host=$dir&sslmode=disable"
echo "pgtest: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') at $dir; HEARTH_TEST_POSTGRES_URL=$HEARTH_TEST_POSTGRES_URL" >&2

# Not exec: the trap must stop the cluster afterwards.
set +e
"$@"
rc=$?
set -e
exit "$rc"
