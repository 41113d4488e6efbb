#!/usr/bin/env bash
# chromium.sh installs Debian's Chromium (the `chromium` package:
# /usr/bin/chromium, with fonts-dejavu-core so that screenshots have text),
# idempotently: apt-get runs only when /usr/bin/chromium
# is missing or does not start.
#
# The web console's end-to-end tests (test/e2e's browser harness, chromedp)
# drive it headless; they fail, never skip, without it.
#
# Called by `make deps`. Prints one line; reruns take a second.
set -euo pipefail
shopt -s inherit_errexit

SCRIPT=chromium
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM=/usr/bin/chromium

# chromium_version prints the installed Chromium's version line, failing when
# the binary is missing or does not run.
chromium_version() {
	[ -x "$CHROMIUM" ] || return 1
	"$CHROMIUM" --headless=new --no-sandbox --disable-gpu --version 2>/dev/null | head -1
}

if version=$(chromium_version) && [ -n "$version" ]; then
	log "already there ($version)"
	exit 0
fi

apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends)
if ! as_root "${apt[@]}" install chromium fonts-dejavu-core >/dev/null 2>&1; then
	log "apt-get update (package lists missing or stale)"
	as_root "${apt[@]}" update >/dev/null || die "apt-get update failed"
	as_root "${apt[@]}" install chromium fonts-dejavu-core >/dev/null || die "apt-get install chromium failed"
fi
version=$(chromium_version) || die "$CHROMIUM does not run after apt-get install chromium"
log "installed from Debian ($version)"
