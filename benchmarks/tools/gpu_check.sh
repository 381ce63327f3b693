#!/usr/bin/env bash
# The one-call GPU check (benchmarks/results/README.md says how to run it and what to do with its files):
# install the prebuilt sm_90 wheel (or build), correctness of every op, compute-sanitizer, the headline benchmark,
# then pytest if time is left -- within ~530 s.  At every phase end $OUT holds gpu_check.md, gpu_check.json,
# gpu_check-tail.txt and gpu_check-files.tar.gz (the rest), and the output ends with the phase summary.
#
#   python3 benchmarks/tools/gpu_check.py wheel       # first, on the CPU: .whl/ (device tool: carry [".whl"])
#   GPU_CHECK_COMMIT=$(git rev-parse HEAD) bash benchmarks/tools/gpu_check.sh            # on the GPU machine
#   bash benchmarks/tools/gpu_check.sh --dry-run      # on a CPU: every phase's code at tiny shapes (a test)
#
# $OUT: where the four files go (default: a new temporary folder, printed).  Other flags: --skip-build,
# --total-s SECONDS, --work DIR (where the phases write; default a new temporary folder).  The phases are in
# benchmarks/tools/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$OUT"
echo "gpu_check: writing to $OUT"
# -P: the checkout stays off sys.path, so the installed package (with its compiled extension) is imported.
exec python3 -P benchmarks/tools/gpu_check.py run --out "$OUT" "$@"
