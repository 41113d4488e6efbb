# Sourced by the scripts beside it (after setting SCRIPT to their name):
# log and die, prefixed with the script's name, and as_root.

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
