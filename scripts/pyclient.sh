#!/usr/bin/env bash
# pyclient.sh installs the official OpenAI Python SDK, pinned, into a
# virtualenv owned by the project (.venv-py, git-ignored), for the end-to-end
# tests that call thaw with a real client no one here wrote. Idempotent: a
# rerun with the pinned version present takes a fraction of a second.
#
# Environment: OPENAI_PY_VERSION (default 2.8.1), PYTHON (default python3).
set -euo pipefail

SCRIPT=pyclient
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$ROOT/.venv-py"
OPENAI_PY_VERSION=${OPENAI_PY_VERSION:-2.8.1}
PYTHON=${PYTHON:-python3}

have=$("$VENV/bin/python" -c 'import openai; print(openai.__version__)' 2>/dev/null || true)
if [ "$have" = "$OPENAI_PY_VERSION" ]; then
	log "openai $have: already there (.venv-py)"
	exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "openai==$OPENAI_PY_VERSION"
have=$("$VENV/bin/python" -c 'import openai; print(openai.__version__)')
[ "$have" = "$OPENAI_PY_VERSION" ] || { echo "pyclient: ERROR: installed openai $have, want $OPENAI_PY_VERSION" >&2; exit 1; }
log "openai $have: installed into .venv-py"
