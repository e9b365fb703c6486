#!/usr/bin/env bash
# The GPU evidence in two prepared device runs (each under the device tool's 10-minute command limit):
#
#   bash recipes/gpu_session.sh bench   [bench.py args]       # speed targets (issue 6): ~4 min on an H100/H200
#   bash recipes/gpu_session.sh repro   [reproduce.py args]   # paper claims, GPU preset (issue 5): ~6 min
#
# Run ../shared/tools/device-wheels.sh here first and carry ".whl" (the device image lacks datasets/evaluate and
# has an older transformers). Results go to $OUT (default outputs/gpu_session); copy them to recipes/results/
# and run `python recipes/reproduce.py report --out <dir>` / `python recipes/update_readme.py`.
# Try the same code paths on CPU first: `bash recipes/gpu_session.sh bench --dry-run`,
# `bash recipes/gpu_session.sh repro --quick --jobs 2`.
set -euo pipefail
cd "$(dirname "$0")/.."
part="${1:?usage: gpu_session.sh bench|repro [args]}"; shift
OUT="${OUT:-outputs/gpu_session}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
(nvidia-smi --query-gpu=name,memory.total --format=csv || true) | tee "$OUT/device.txt"
case "$part" in
  bench) timeout 540 python3 recipes/bench.py --preset gpu --out "$OUT/bench_gpu.json" "$@" 2>&1 | tee "$OUT/bench.log" ;;
  repro) timeout 540 python3 recipes/reproduce.py run all --preset gpu --out "$OUT/repro_gpu" "$@" 2>&1 | tee "$OUT/repro.log" ;;
  *) echo "unknown part '$part': use bench or repro" >&2; exit 2 ;;
esac
