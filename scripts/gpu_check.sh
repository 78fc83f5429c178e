#!/usr/bin/env bash
# The prepared GPU check: install the carried wheels this Python lacks into a temporary folder, then run
# every section of the scripts/gpu_check package (≤ 8 minutes on one H200); results.json and results.md go to $OUT.
#   make gpu-wheels                           # here, with network: wheels for Python 3.12 → $GPU_WHEELS
#   OUT=/some/dir bash scripts/gpu_check.sh   # on the GPU machine (carry benchmarks/_work/gpu_wheels)
#   DEVICE=cpu bash scripts/gpu_check.sh      # tiny CPU mode (what the test suite runs)
# Extra arguments go to `python scripts/gpu_check run` (e.g. --sections packing,train --isolation spawn).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-out/gpu_check}"
WHEELS="${GPU_WHEELS:-benchmarks/_work/gpu_wheels}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# torch.cuda.is_available() via NVML leaves CUDA uninitialised, so sections can run in forked processes.
export PYTORCH_NVML_BASED_CUDA_CHECK=1

SITE="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")"
trap 'rm -rf "$SITE"' EXIT
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PYTHON" scripts/gpu_check install-wheels "$WHEELS" "$SITE"
  export GPU_CHECK_WHEELS_MANIFEST="$SITE/manifest.json"
else
  echo "gpu_check: no wheels in $WHEELS; using what $PYTHON has" >&2
fi
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" scripts/gpu_check run --device "$DEVICE" --out "$OUT" "$@"
