#!/usr/bin/env bash
# What a GPU session needs, in as few device calls as possible (device time is scarce, a call is capped at
# 10 minutes): build the extension, run the whole test suite on the GPU, run the benchmarks, optionally sweep
# the Triton tiles. Logs and the results files land in $OUT.
#
#   bash benchmarks/tools/gpu_session.sh                        # build + tests + every benchmark file
#   BENCH=benchmarks/bench_pool.py SKIP_TESTS=1 bash ...        # a later call on the warm machine: one file
#   SKIP_BUILD=1 SKIP_TESTS=1 BENCH="benchmarks/bench_fused.py" bash ...
#   TUNE=1 bash benchmarks/tools/gpu_session.sh                 # ... + the LRN Triton tile sweep
#
# The whole benchmark grid (~950 GPU cases, dozens of torch.compile graphs) may not fit one 10-minute call:
# split it over calls with BENCH (space-separated files), one results file pair per op.  BENCH may end with a
# one-word -k selection; BENCH_RESULTS_SUFFIX keeps one op's split runs apart (conv, AlexNet: one call per dtype):
#   SKIP_BUILD=1 SKIP_TESTS=1 BENCH_RESULTS_SUFFIX=bf16 BENCH="benchmarks/bench_conv.py -k bf16" bash ...
# `python3 -P` keeps the checkout off sys.path, so the installed package (with its extension) is imported.
set -uo pipefail
OUT="${OUT:-/tmp/alexnet-kernels-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."

start=$(date +%s)
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
    python3 -m pip install --no-build-isolation --no-deps . >"$OUT/build.log" 2>&1 \
    || { tail -n 60 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
  echo "build: $(( $(date +%s) - start )) s"
fi
(cd "$(mktemp -d)" && python3 -m alexnet_kernels) 2>&1 | tee "$OUT/info.txt"

if [ "${SKIP_TESTS:-0}" != "1" ]; then
  python3 -P -m pytest tests -q -rs 2>&1 | tee "$OUT/tests.log" | tail -n 40
fi
# shellcheck disable=SC2086
BENCH_RESULTS_DIR="$OUT" python3 -P -m pytest ${BENCH:-benchmarks} --benchmark-only -q 2>&1 \
  | tee "$OUT/bench.log" | grep -v "^test_" | tail -n 150
if [ "${TUNE:-0}" = "1" ]; then
  python3 -P benchmarks/tools/tune_lrn_triton.py --quick 2>&1 | tee "$OUT/tune.log" | tail -n 40
fi
echo "total: $(( $(date +%s) - start )) s"
