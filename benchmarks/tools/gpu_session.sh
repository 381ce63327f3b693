#!/usr/bin/env bash
# Everything a GPU session needs in ONE device call (device time is scarce): build the extension, run the
# whole test suite on the GPU, run the benchmarks, optionally sweep the Triton tiles. Logs and the results
# files land in $OUT (at most 8 files come back: build.log info.txt tests.log bench.log tune.log + results).
#
#   bash benchmarks/tools/gpu_session.sh            # build + tests + benchmarks
#   TUNE=1 bash benchmarks/tools/gpu_session.sh     # ... + Triton tile sweep (a few minutes more)
#
# `python3 -P` keeps the checkout off sys.path, so the installed package (with its extension) is imported.
set -uo pipefail
OUT="${OUT:-/tmp/alexnet-kernels-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."

start=$(date +%s)
TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}" \
  python3 -m pip install --no-build-isolation --no-deps . >"$OUT/build.log" 2>&1 \
  || { tail -n 60 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
(cd "$(mktemp -d)" && python3 -m alexnet_kernels) 2>&1 | tee "$OUT/info.txt"

python3 -P -m pytest tests -q -rs 2>&1 | tee "$OUT/tests.log" | tail -n 40
BENCH_RESULTS_DIR="$OUT" python3 -P -m pytest benchmarks --benchmark-only -q 2>&1 | tee "$OUT/bench.log" \
  | grep -v "^test_lrn" | tail -n 120
if [ "${TUNE:-0}" = "1" ]; then
  python3 -P benchmarks/tools/tune_lrn_triton.py --quick 2>&1 | tee "$OUT/tune.log" | tail -n 40
fi
echo "total: $(( $(date +%s) - start )) s"
