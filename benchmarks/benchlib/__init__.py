"""Shared benchmark machinery: timing, the ceilings, result collection, summary and writing.

`import benchlib` gives every name of its modules, one concern each:
  collect   Collector, register_op(), skip(), record() (traffic models -> GB/s, TFLOP/s, speed-ups)
  timing    do_bench / pytest-benchmark timing, the spread over repeats, host time, peak memory, compiled()
  ceilings  the copy bandwidth and matmul peak (GPU), the CPU probes for the pictures
  cases     dtypes, layouts, inputs, the correctness check, first_call(), gpu_params()
  tables    the summary tables;  plots  the pictures;  results  the results files and their environment
  peers     the CPU peers: ONNX graphs (onnx package) run by onnxruntime and OpenVINO, fp32, torch's threads
  interleave  CPU cases: every provider checked, then timed in interleaved rounds, the stall rule
Assigning a name on the package (benchlib.gpu_time_ms = ..., monkeypatch.setattr(benchlib, "REPEATS", ...))
rebinds it in every module that holds it, so a patch takes effect where the name is used.

Each op has one benchmark file, benchmarks/bench_<op>.py (collected through pyproject.toml's python_files).  It
calls register_op() once at import (case fields, providers and baselines per device type, notes for the results
file); each test then either
skips a provider with skip() (the reason is kept and shown in the summary) or times it and calls
record().  benchmarks/conftest.py prints one summary table per op and device type at the end of the
run and writes benchmarks/results/<op>-<device-slug>-<YYYY-MM-DD>.md and .json.

GPU timing: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") -- keywords that
exist in Triton 3.6 and 3.8; do_bench flushes L2 before every timed call.  Then gpu_pedantic() runs
a few synchronised rounds through pytest-benchmark so that it has its record; the numbers reported
(ms, GB/s, ...) are do_bench's medians.
CPU timing: interleave.run_cpu_case -- every provider of a case timed in the same process over rounds, the
order rotated each round, ms the median of its round medians, a provider whose rounds disagree beyond
STALL_BOUND measured again and, if still so, recorded as stalled (no ratio printed).

Bandwidth: GB/s = (tensors moved x bytes per tensor) / time -- or bytes moved / time for ops whose
tensors differ in size (record(traffic_bytes=...)) -- with GB = 1e9 bytes and each op's traffic model
(stated in its notes).  pct_of_copy = GB/s over the device-to-device copy bandwidth, measured
once per session by copying a 1 GiB fp32 tensor with do_bench (read + write counted).
Compute-bound ops (register_op(cell="tflops"), record(flops=...)): TFLOP/s = FLOPs / time (1e12), and
pct_of_matmul = TFLOP/s over the bf16 matmul peak, measured once per session with do_bench on an
8192x8192x8192 bf16 torch.mm (gpu_matmul_tflops).  Whole-model throughput (register_op(cell="rate"),
record(items=...)): items / s, e.g. images per training step / step time.
Speed-ups are baseline ms / provider ms for the same case, from the same session; they are recomputed
whenever a row of the case arrives, so the order in which providers run does not matter.
Spread: each row keeps the medians of REPEATS consecutive slices of its timed calls (GPU: do_bench's calls, from
one do_bench run with return_mode="all"; CPU: pytest-benchmark's rounds), its ms_range = [lowest, highest], and
each speed-up a range: [baseline's lowest / row's highest, baseline's highest / row's lowest].  The summary
prints them in brackets; one repeat (e.g. a 100 ms GPU step that do_bench times once) gives no range.
Pictures: write_results() also draws <stem>.png per op (plot_op: GB/s, TFLOP/s or items/s per provider and
case, with the range as error bars, against the measured copy bandwidth / matmul peak; on a CPU the ceilings
come from cpu_ceilings()).
Rows are the benchmark fixture's extra_info dicts, so pytest-benchmark's own JSON (--benchmark-json /
--benchmark-autosave) carries the same fields.

Environment:
  BENCH_RESULTS_DIR=dir    where the results files go (default: benchmarks/results)
  BENCH_WRITE_RESULTS=1|0  force writing / not writing.  Default: write when GPU rows were measured.
                           A run without GPU rows writes to <op>-cpu-<cpu model>-<date>.*, so it never
                           overwrites a GPU file.
  BENCH_PLOTS=0            no pictures (they need matplotlib; without it they are left out silently)
  BENCH_RESULTS_SUFFIX=s   append -s to the results files' names (<op>-<device>-<date>-s.*): for one op's grid
                           split over several runs (e.g. -k bf16 / -k fp32), so the files do not collide.
"""
import sys
import types

from . import cases, ceilings, collect, interleave, peers, plots, results, tables, timing

MODULES = (collect, timing, ceilings, cases, tables, plots, results, peers, interleave)

for _module in MODULES:
    for _name, _value in vars(_module).items():
        if not _name.startswith("__"):
            globals().setdefault(_name, _value)


class _PatchThrough(types.ModuleType):
    """The package module: setting (or deleting) one of its names does the same in each of MODULES that holds the
    name, since the functions look their globals up in their own module."""

    def __setattr__(self, name, value):
        for module in MODULES:
            if name in vars(module):
                setattr(module, name, value)
        super().__setattr__(name, value)

    def __delattr__(self, name):
        for module in MODULES:
            if name in vars(module):
                delattr(module, name)
        super().__delattr__(name)


sys.modules[__name__].__class__ = _PatchThrough
del _module, _name, _value
