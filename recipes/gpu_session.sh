#!/usr/bin/env bash
# The GPU evidence as one prepared device run (under the device tool's 10-minute command limit):
#
#   bash recipes/gpu_session.sh bench   [bench.py args]       # CUDA tests (<= 3 min), then speed targets (~4 min)
#   bash recipes/gpu_session.sh probe   [probe args]          # recipes/compile_nan_probe.py (<= PROBE_S s), then `bench`
#
# Run `../shared/tools/device-wheels.sh pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0` here first
# and carry ".whl" (the device image lacks datasets/evaluate, maybe pytest, and has an older transformers).
# Results go to $OUT (default outputs/gpu_session): bench_gpu.{json,md,png} (or bench_gpu.partial.json if the run
# was cut short: render it with `bench.py --report-only --out <it>`) and tests_cuda.log.
# Try the same code path on CPU first: `bash recipes/gpu_session.sh bench --dry-run`.
# TESTS_S / BENCH_S (default 180 / 360) cap the two parts in seconds, so a run ends inside the device call's timeout
# (bench runs each section in its own process and stops the one running when BENCH_S is spent; the finished ones are
# kept). TESTS (default "tests/test_cuda.py tests/test_fast.py") picks the test files; TESTS=none skips them. BENCH_BASE=<bench_gpu.json of
# an earlier run> with `--sections A,B --merge` re-runs sections A and B only and keeps that run's other sections.
# What the 2026-12-04 H200 runs left open (recipes/results/bench_gpu.md, gpu_logs/compile_nan_probe.md), one call of
# about 7 minutes: what in Inductor makes the whole-module compiled joint step's teacher gradients non-finite
# (Inductor's decompositions alone, then SDPA decomposed to math), then the bench's train_compile section with the bf16 loss tolerance:
#   TESTS=none PROBE_S=240 BENCH_S=150 BENCH_BASE=recipes/results/bench_gpu.json \
#     BENCH_ARGS="--sections train_compile --merge" bash recipes/gpu_session.sh probe \
#     --variants aot_eager_decomp_partition,inductor_math_sdp
set -euo pipefail
cd "$(dirname "$0")/.."
part="${1:?usage: gpu_session.sh bench|probe [args]}"; shift
OUT="${OUT:-outputs/gpu_session}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,memory.total --format=csv || true) | tee "$OUT/device.txt"
if [ "$part" = probe ]; then  # where the compiled joint step goes non-finite; then the benchmark (its args: BENCH_ARGS)
  (timeout "${PROBE_S:-300}" python3 recipes/compile_nan_probe.py --budget-seconds "$(( ${PROBE_S:-300} - 100 ))" \
    --out "$OUT/compile_nan_probe.json" "$@" 2>&1 || true) | tee "$OUT/compile_nan_probe.log"
  part=bench
  # shellcheck disable=SC2086
  set -- ${BENCH_ARGS:-}
fi
case "$part" in
  bench)  # the CUDA equality / sync-free tests first (their result is kept even if they fail), then the benchmark
    # shellcheck disable=SC2086
    [ "${TESTS:-}" = none ] || (timeout "${TESTS_S:-180}" python3 -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_cuda.py tests/test_fast.py} 2>&1 || true) | tee "$OUT/tests_cuda.log"
    if [ -n "${BENCH_BASE:-}" ]; then cp "$BENCH_BASE" "$OUT/bench_gpu.json"; fi
    bench_s="${BENCH_S:-360}"
    timeout $((bench_s + 30)) python3 recipes/bench.py --preset gpu --isolate --budget-seconds "$((bench_s - 10))" \
      --out "$OUT/bench_gpu.json" "$@" 2>&1 | tee "$OUT/bench.log" ;;
  *) echo "unknown part '$part': use bench or probe" >&2; exit 2 ;;
esac
