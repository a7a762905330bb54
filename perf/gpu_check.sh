#!/usr/bin/env bash
# The GPU check: one script, offline, under 8 minutes on one H100 (see perf/README.md, "GPU check").
#
#   perf/gpu_check.sh                          # measures on the GPU, writes runs/gpu-check/gpu_check.json
#   perf/gpu_check.sh --out DIR                # elsewhere
#   perf/gpu_check.sh --wheels DIR             # first install wheels made by perf/gpu_wheels.sh (no network)
#   perf/gpu_check.sh --smoke                  # CPU, tiny shapes: the same code end to end in ~3 minutes
#
# Needs: the project checkout, ../shared (or $AMNESIA_SHARED: tokenizers/olmo-0724,
# data/semeval25, data/mmlu_no_train) and a Python with a CUDA build of torch ($PYTHON, else
# .venv/bin/python, else python3) and the project's other dependencies, installed or given as
# --wheels DIR: they are installed with --no-deps into DIR/site, which goes first on PYTHONPATH
# with the checkout (the machine's own torch stays). Nothing is downloaded: the Hugging
# Face libraries run offline and the model is built from perf/model_configs/olmo-1b-0724.json
# with random weights. Every other argument goes to perf/gpu_check.py (--help there).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=runs/gpu-check
WHEELS=""
PY="${PYTHON:-}"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"

if [ -n "$WHEELS" ]; then
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "gpu_check: $WHEELS holds no .whl files (make them with perf/gpu_wheels.sh)" >&2; exit 2; }
  echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $WHEELS/site (no index, no deps) ..."
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --upgrade --target "$WHEELS/site" "$WHEELS"/*.whl 2>"$OUT/pip.log" \
    || { tail -3 "$OUT/pip.log" >&2; echo "gpu_check: pip install from $WHEELS failed (log: $OUT/pip.log)" >&2; exit 2; }
  export PYTHONPATH="$(cd "$WHEELS/site" && pwd):$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import torch, transformers, transformer_lens, lm_eval, unlearn, tracing" 2>/dev/null || {
  echo "gpu_check: $PY lacks the project's dependencies; pass --wheels DIR (see perf/README.md) or --python" >&2; exit 2; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

# 450 s for the sections themselves (each has its own limit too); the outer timeout is the 8-minute promise.
timeout 470 "$PY" perf/gpu_check.py --out "$OUT" "${ARGS[@]}"
rc=$?
[ $rc -eq 124 ] && echo "gpu_check: stopped at the 8-minute limit; partial results are in $OUT" >&2
exit $rc
