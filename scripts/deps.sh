#!/usr/bin/env bash
# deps.sh installs what thaw's integration tests need, idempotently and
# cached, into the repository's bin/ (git-ignored):
#
#   bin/redis-server         symlink to Debian's redis-server (apt-get if missing)
#   postgresql               Debian's PostgreSQL (scripts/postgres.sh; its
#                            default cluster stopped: tests start their own)
#   curl                     from Debian if missing (the client-behaviour tests)
#   bin/nomad                Nomad $NOMAD_VERSION built from the Go module proxy
#   bin/plugins/thaw-fakegpu the fake nvidia/gpu device plugin (nomad/fakegpu)
#
# Called by `make deps` (everything) and `make test` (`deps.sh redis`: what
# its tests use so far). Each step prints one line. Reruns take seconds.
#
# Environment:
#   NOMAD_VERSION      pinned Nomad version (default v1.10.5)
#   NOMAD_FALLBACK_VERSION  built when the pinned one fails (default v1.10.0,
#                      known to work)
#   NOMAD_API_VERSION  pseudo-version of github.com/hashicorp/nomad/api the
#                      build uses (the module zip lacks the nested api/ module)
#   THAW_CACHE_DIR     build cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/thaw)
set -euo pipefail
shopt -s inherit_errexit

SCRIPT=deps
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NOMAD_VERSION=${NOMAD_VERSION:-v1.10.5}
NOMAD_FALLBACK_VERSION=${NOMAD_FALLBACK_VERSION:-v1.10.0}
# The same pseudo-version thaw's own go.mod uses, so it is already in the
# module cache on any machine that built thaw.
NOMAD_API_VERSION=${NOMAD_API_VERSION:-v0.0.0-20261016150620-df630b26e78a}
CACHE=${THAW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/thaw}

# Isolate every Go invocation here from thaw's module and any workspace.
export GOWORK=off
export GOFLAGS="-mod=mod -buildvcs=false"

mkdir -p "$BIN/plugins" "$CACHE"

command -v go >/dev/null || die "go is not installed (need Go >= 1.24 to build Nomad)"

# ---------------------------------------------------------------- redis ----

# stop_system_redis makes sure the Debian package did not leave a system Redis
# running or enabled: tests start their own on a loopback port of their choice.
stop_system_redis() {
	if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
		as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
	fi
	if [ -x /etc/init.d/redis-server ]; then
		as_root /etc/init.d/redis-server stop >/dev/null 2>&1 || true
		if command -v update-rc.d >/dev/null; then
			as_root update-rc.d redis-server disable >/dev/null 2>&1 || true
		fi
	fi
}

# apt_install PKG installs a Debian package, updating the package lists
# first if they are missing or stale.
apt_install() {
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
	if ! as_root "${apt[@]}" install "$1" >/dev/null 2>&1; then
		log "$1: apt-get update (package lists missing or stale)"
		as_root "${apt[@]}" update >/dev/null ||
			die "apt-get update failed"
		as_root "${apt[@]}" install "$1" >/dev/null ||
			die "apt-get install $1 failed"
	fi
}

install_redis() {
	apt_install redis-server
	stop_system_redis
}

redis_bin=$(command -v redis-server || true)
if [ -z "$redis_bin" ]; then
	install_redis
	redis_bin=$(command -v redis-server || true)
	[ -n "$redis_bin" ] || die "redis-server still missing after apt-get install"
	ln -sfn "$redis_bin" "$BIN/redis-server"
	log "redis-server: installed from Debian ($("$BIN/redis-server" --version | awk '{print $3}'))"
else
	ln -sfn "$redis_bin" "$BIN/redis-server"
	log "redis-server: already there ($redis_bin, $("$redis_bin" --version | awk '{print $3}'))"
fi
"$BIN/redis-server" --version >/dev/null || die "bin/redis-server does not run"

# curl: the client-behaviour tests use it as a user would (curl -m).
if ! command -v curl >/dev/null; then
	apt_install curl
	log "curl: installed from Debian"
fi

bash "$ROOT/scripts/postgres.sh" # PostgreSQL from Debian (the meter's store tests)

# `deps.sh redis` stops here: what the thaw dev tests need.
if [ "${1:-all}" = redis ]; then
	exit 0
fi

# ---------------------------------------------------------------- nomad ----

# nomad_version_ok succeeds when bin/nomad exists and is version $1.
nomad_version_ok() {
	[ -x "$BIN/nomad" ] && "$BIN/nomad" version 2>/dev/null | head -1 | grep -qx "Nomad $1"
}

# module_dir downloads module $1 through the Go module proxy and prints its
# read-only source directory in the module cache.
module_dir() {
	local out dir
	out=$(cd "$CACHE" && go mod download -json "$1") || {
		printf '%s\n' "$out" >&2
		return 1
	}
	dir=$(printf '%s\n' "$out" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$dir" ] && [ -d "$dir" ] || return 1
	printf '%s\n' "$dir"
}

# prepare_nomad_src copies Nomad $1's module source into the cache, writable,
# with its `replace .../api => ./api` (absent from the module zip) pointed at
# a published pseudo-version, and prints the directory.
prepare_nomad_src() {
	local ver=$1 src="$CACHE/nomad-src-$1" dir
	if [ ! -f "$src/.thaw-prepared" ]; then
		dir=$(module_dir "github.com/hashicorp/nomad@$ver") || return 1
		rm -rf "$src" "$src.tmp"
		cp -r "$dir" "$src.tmp" || return 1
		chmod -R u+w "$src.tmp" || return 1
		(cd "$src.tmp" &&
			go mod edit -replace "github.com/hashicorp/nomad/api=github.com/hashicorp/nomad/api@$NOMAD_API_VERSION") || return 1
		echo "$NOMAD_API_VERSION" >"$src.tmp/.thaw-prepared" || return 1
		mv "$src.tmp" "$src" || return 1
	fi
	printf '%s\n' "$src"
}

# build_nomad builds Nomad $1 into bin/nomad.
build_nomad() {
	local ver=$1 src
	src=$(prepare_nomad_src "$ver") || return 1
	local buildlog="$CACHE/nomad-build-$ver.log"
	log "nomad: building $ver (about 4 minutes on 2 cores, seconds when cached; log: $buildlog)..."
	if ! (cd "$src" && go build -trimpath -o "$BIN/nomad.tmp" .) >"$buildlog" 2>&1; then
		grep -v '^go: downloading' "$buildlog" | tail -20 >&2
		return 1
	fi
	mv "$BIN/nomad.tmp" "$BIN/nomad" || return 1
	nomad_version_ok "$ver"
}

FB=$NOMAD_FALLBACK_VERSION
if nomad_version_ok "$NOMAD_VERSION"; then
	log "nomad: already there ($NOMAD_VERSION, bin/nomad)"
	nomad_built=$NOMAD_VERSION
elif build_nomad "$NOMAD_VERSION"; then
	log "nomad: built $NOMAD_VERSION into bin/nomad"
	nomad_built=$NOMAD_VERSION
elif [ "$NOMAD_VERSION" = "$FB" ]; then
	rm -f "$BIN/nomad.tmp"
	die "could not build nomad $NOMAD_VERSION"
else
	log "nomad: $NOMAD_VERSION failed to build; falling back to $FB"
	if nomad_version_ok "$FB"; then
		log "nomad: already there ($FB, bin/nomad)"
	elif build_nomad "$FB"; then
		log "nomad: built $FB into bin/nomad"
	else
		rm -f "$BIN/nomad.tmp"
		die "could not build nomad $NOMAD_VERSION nor $FB"
	fi
	nomad_built=$FB
fi

# -------------------------------------------------------------- fakegpu ----

# The plugin is built against the same Nomad source as the agent. Its go.mod
# names a Nomad version; pointing `replace` at the prepared source tree keeps
# the two identical even after a fallback.
fakegpu_src="$ROOT/nomad/fakegpu"
nomad_src=$(prepare_nomad_src "$nomad_built")
stamp="$CACHE/fakegpu.stamp"
want_stamp="$nomad_built $(cd "$fakegpu_src" &&
	find . -name '*.go' ! -name '*_test.go' -o -name 'go.*' | LC_ALL=C sort | xargs cat | cksum)"
if [ -x "$BIN/plugins/thaw-fakegpu" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ]; then
	log "thaw-fakegpu: already there (bin/plugins/thaw-fakegpu)"
else
	# Build from a scratch copy so the checked-in go.mod/go.sum stay untouched.
	work="$CACHE/fakegpu-build"
	rm -rf "$work"
	mkdir -p "$work"
	cp -r "$fakegpu_src"/. "$work"/
	if ! (cd "$work" &&
		go mod edit -replace "github.com/hashicorp/nomad=$nomad_src" \
			-replace "github.com/hashicorp/nomad/api=github.com/hashicorp/nomad/api@$NOMAD_API_VERSION" &&
		go build -trimpath -o "$BIN/plugins/thaw-fakegpu.tmp" ./cmd/thaw-fakegpu) >"$CACHE/fakegpu-build.log" 2>&1; then
		grep -v '^go: downloading' "$CACHE/fakegpu-build.log" | tail -20 >&2
		die "building thaw-fakegpu failed (log: $CACHE/fakegpu-build.log)"
	fi
	mv "$BIN/plugins/thaw-fakegpu.tmp" "$BIN/plugins/thaw-fakegpu"
	echo "$want_stamp" >"$stamp"
	log "thaw-fakegpu: built against nomad $nomad_built into bin/plugins/thaw-fakegpu"
fi
