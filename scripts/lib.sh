# Sourced by the scripts beside it (after setting SCRIPT to their name):
# ROOT and BIN, log and die, prefixed with the script's name, and as_root.

# ROOT is the repository; BIN its bin/, where `make deps` installs tools.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
BIN="$ROOT/bin"

log() { printf '%s: %s\n' "$SCRIPT" "$*"; }
die() {
	printf '%s: ERROR: %s\n' "$SCRIPT" "$*" >&2
	exit 1
}

# as_root runs a command as root (directly, or through sudo when available).
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root to run: $*"
	fi
}
