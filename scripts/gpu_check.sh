#!/usr/bin/env bash
# One prepared GPU run: the gpu-marked tests, then the shapes bench (135M, 1.7B, 8B; bf16 and nf4), in ~8 min.
#
# The GPU machine has torch, transformers and pytest but no bitsandbytes and no internet, so its wheel travels
# with the working tree from .whl/ (git-ignored). Fetch it once where pip works (Python 3.12 there):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d .whl bitsandbytes==0.50.2
# Run from the repository root; results go to $OUT (default out/gpu): gpu-bench.json, gpu-bench.md, logs.
# Try it on a CPU first: DEVICE=cpu SHAPES=135m bash scripts/gpu_check.sh  (minutes, no GPU figures).
set -u
OUT=${OUT:-out/gpu}
DEVICE=${DEVICE:-cuda}
SHAPES=${SHAPES:-135m,1.7b,8b}
mkdir -p "$OUT"
if ! python3 -c "import bitsandbytes" 2>/dev/null; then
  ls .whl/bitsandbytes-*.whl >/dev/null 2>&1 || { echo "no bitsandbytes and no .whl/bitsandbytes-*.whl" >&2; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1 || true
timeout 180 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider >"$OUT/tests.log" 2>&1 || status=1
tail -n 3 "$OUT/tests.log"
timeout 420 python3 -m persona_demo.bench.shapes --device "$DEVICE" --shapes "$SHAPES" \
  --out "$OUT/gpu-bench.json" >"$OUT/gpu-bench.md" 2>"$OUT/bench.log" || status=1
cat "$OUT/gpu-bench.md"
exit $status
