#!/usr/bin/env bash
# Wheels for a GPU machine without network that already has a CUDA PyTorch (see perf/README.md, "GPU check").
#
#   perf/gpu_wheels.sh DIR                          # every package of this environment but torch, for CPython 3.12 x86_64
#   perf/gpu_wheels.sh DIR --python-version 3.11    # another target Python
#   perf/gpu_wheels.sh DIR --skip numpy,pandas      # leave out packages the target already has (any version)
#
# Reads `pip freeze` of this environment ($PYTHON, else .venv/bin/python, else python3), drops torch,
# triton and nvidia-* (the target's CUDA build stays) and the --skip names, and puts one wheel of each
# remaining package, at the same version, into DIR: binary wheels for manylinux x86_64, and for
# packages published only as sources a pure-Python wheel built here. On the target:
#   perf/gpu_check.sh --wheels DIR   (installs them with --no-deps into DIR/site, first on PYTHONPATH)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || { sed -n '2,12p' "$0"; exit 2; }
DIR="$1"; shift
PYV=3.12
SKIP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYV="$2"; shift 2 ;;
    --skip) SKIP="$2"; shift 2 ;;
    *) echo "gpu_wheels: unknown option $1 (expected --python-version or --skip)" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
norm() { tr 'A-Z_.' 'a-z--' <<<"$1"; }
skip=" torch triton $(for s in ${SKIP//,/ }; do printf '%s ' "$(norm "$s")"; done)"
mkdir -p "$DIR"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$PY" -m pip freeze --exclude-editable --all | grep -E '^[A-Za-z0-9_.-]+==' | while IFS= read -r req; do
  name="$(norm "${req%%==*}")"
  case "$skip" in *" $name "*) continue ;; esac
  case "$name" in nvidia-*|pip|setuptools|wheel) continue ;; esac
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${PLATFORMS[@]}" -d "$DIR" "$req" 2>/dev/null; then
    "$PY" -m pip wheel -q --no-deps -w "$DIR" "$req" >/dev/null 2>&1 || { echo "gpu_wheels: no wheel for $req (neither binary for Python $PYV nor buildable here)" >&2; exit 1; }
  fi
done
echo "gpu_wheels: $(ls "$DIR"/*.whl | wc -l) wheels, $(du -sh "$DIR" | cut -f1), in $DIR"
