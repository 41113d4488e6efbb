#!/usr/bin/env bash
# postgres.sh installs PostgreSQL's server binaries from Debian (the
# `postgresql` package: initdb, pg_ctl, postgres under
# /usr/lib/postgresql/<version>/bin), idempotently: apt-get runs only when no
# /usr/lib/postgresql/*/bin/initdb is there.
#
# The tests never use the package's default cluster: each starts its own,
# throw-away, on a free loopback port (test/e2e.StartPostgres). So when the
# install created and started the default cluster (port 5432), it is
# stopped and set to start manually.
#
# Called by scripts/deps.sh (`make deps`, and the `deps.sh redis` subset
# that `make test`'s unit tests need: the meter's store suite runs on a real
# PostgreSQL). Prints one line; reruns take a second.
set -euo pipefail
shopt -s inherit_errexit

SCRIPT=postgres
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# initdb_path prints the newest /usr/lib/postgresql/<version>/bin/initdb.
initdb_path() {
	local found
	found=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -1)
	[ -n "$found" ] && [ -x "$found" ] && printf '%s\n' "$found"
}

# stop_default_clusters stops any cluster the package started and keeps it
# from starting again at boot.
stop_default_clusters() {
	command -v pg_lsclusters >/dev/null || return 0
	local ver name port status _rest
	while read -r ver name port status _rest; do
		if [ "$status" = online ]; then
			as_root pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 ||
				die "could not stop the default cluster $ver/$name on port $port"
			log "stopped the package's default cluster $ver/$name (port $port): tests start their own"
		fi
		if [ -f "/etc/postgresql/$ver/$name/start.conf" ]; then
			echo manual | as_root tee "/etc/postgresql/$ver/$name/start.conf" >/dev/null
		fi
	done < <(pg_lsclusters -h 2>/dev/null)
}

if initdb=$(initdb_path); then
	log "already there ($("$initdb" --version))"
	exit 0
fi

apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
if ! as_root "${apt[@]}" install postgresql >/dev/null 2>&1; then
	log "apt-get update (package lists missing or stale)"
	as_root "${apt[@]}" update >/dev/null || die "apt-get update failed"
	as_root "${apt[@]}" install postgresql >/dev/null || die "apt-get install postgresql failed"
fi
stop_default_clusters
initdb=$(initdb_path) || die "initdb still missing after apt-get install postgresql"
id postgres >/dev/null 2>&1 || die "the postgresql package did not create the system user postgres"
log "installed from Debian ($("$initdb" --version))"
