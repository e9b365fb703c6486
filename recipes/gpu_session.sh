#!/usr/bin/env bash
# The GPU evidence in two prepared device runs (each under the device tool's 10-minute command limit):
#
#   bash recipes/gpu_session.sh bench   [bench.py args]       # CUDA tests (<= 3 min), then speed targets (~4 min)
#   bash recipes/gpu_session.sh repro   [reproduce.py args]   # paper claims, GPU preset (issue 5): ~6 min
#
# Run `../shared/tools/device-wheels.sh pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0` here first
# and carry ".whl" (the device image lacks datasets/evaluate, maybe pytest, and has an older transformers).
# Results go to $OUT (default outputs/gpu_session): bench_gpu.{json,md,png} (or bench_gpu.partial.json if the run
# was cut short: render it with `bench.py --report-only --out <it>`), tests_cuda.log, and repro_gpu.tar.gz
# (`tar -xzf repro_gpu.tar.gz -C recipes/results && mv recipes/results/repro_gpu recipes/results/gpu`, then
# `python recipes/reproduce.py report --out recipes/results/gpu --dest recipes/RESULTS_GPU.md`; the CPU JSONs that
# README Results is rendered from stay where they are).
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
  bench)  # the CUDA equality / sync-free tests first (their result is kept even if they fail), then the benchmark
    (timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_fast.py 2>&1 || true) | tee "$OUT/tests_cuda.log"
    timeout 360 python3 recipes/bench.py --preset gpu --out "$OUT/bench_gpu.json" "$@" 2>&1 | tee "$OUT/bench.log" ;;
  repro)  # the device returns at most 8 files: the item results come back as one archive, also after a timeout
    rc=0
    timeout 540 python3 recipes/reproduce.py run all --preset gpu --out /tmp/repro_gpu "$@" 2>&1 | tee "$OUT/repro.log" || rc=$?
    tar -czf "$OUT/repro_gpu.tar.gz" -C /tmp repro_gpu || true
    exit "$rc" ;;
  *) echo "unknown part '$part': use bench or repro" >&2; exit 2 ;;
esac
