"""Shared benchmark machinery: timing, the bandwidth ceiling, result collection, summary and writing.

Each op has one benchmark file, benchmarks/bench_<op>.py (collected through pyproject.toml's python_files).  It calls register_op() once at import (case
fields, providers and baselines per device type, notes for the results file); each test then either
skips a provider with skip() (the reason is kept and shown in the summary) or times it and calls
record().  benchmarks/conftest.py prints one summary table per op and device type at the end of the
run and writes benchmarks/results/<op>-<device-slug>-<YYYY-MM-DD>.md and .json.

GPU timing: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") -- keywords that
exist in Triton 3.6 and 3.8; do_bench flushes L2 before every timed call.  Then gpu_pedantic() runs
a few synchronised rounds through pytest-benchmark so that it has its record; the numbers reported
(ms, GB/s, ...) are do_bench's medians.
CPU timing: pytest-benchmark's own (benchmark(fn)); ms is the median of its rounds.

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
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import time
import types
from pathlib import Path

import pytest
import torch

GB = 1e9
DO_BENCH_KWARGS = {"warmup": 25, "rep": 100, "return_mode": "median"}
PEDANTIC_ROUNDS = 3
REPEATS = 5           # the spread: medians of this many consecutive slices of one case's timed calls
COPY_BYTES = 2 ** 30  # the copy-bandwidth probe: a 1 GiB fp32 tensor
MATMUL_N = 8192       # the matmul-peak probe: an N x N x N bf16 torch.mm
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------------
# Result collection
# --------------------------------------------------------------------------------------------------

class Collector:
    """Everything one session measured: ops, rows, skips, the copy bandwidth."""

    def __init__(self):
        self.ops = {}            # op -> spec dict (register_op)
        self.records = []        # row dicts (the benchmark fixtures' extra_info)
        self.skips = []          # {op, device, case fields..., provider, reason}
        self.case_order = {}     # (op, device, case key) -> None, in the order cases were first seen
        self.copy_gbps = None
        self.copy_ms = None
        self.matmul_tflops = None   # gpu_matmul_tflops(): bf16 MATMUL_N^3 torch.mm, TFLOP/s
        self.matmul_ms = None
        self.cpu_ceilings = None    # cpu_ceilings(): {"copy_gbps", "matmul_tflops"} for the CPU pictures
        self.plotted = {}           # op -> what its last picture showed (write_results redraws only on change)
        self.started = datetime.datetime.now()

    def case_key(self, op, device, row):
        return (op, device) + tuple(row.get(f) for f in self.ops[op]["case_fields"])

    def rows_of(self, op, device, key=None):
        return [r for r in self.records if r["op"] == op and r["device"] == device
                and (key is None or self.case_key(op, device, r) == key)]

    def update_speedups(self, op, device, key):
        """speedup_vs_<baseline> = baseline ms / row ms, for every row of the case, and when both were timed in
        repeats speedup_vs_<baseline>_range = [the baseline's fastest repeat / the row's slowest, the
        baseline's slowest / the row's fastest]: how far the noise of the two measurements can move the ratio."""
        rows = self.rows_of(op, device, key)
        by_provider = {r["provider"]: r for r in rows}
        for base in self.ops[op]["baselines"].get(device, ()):
            b = by_provider.get(base)
            if b is None or not b["ms"] > 0:
                continue
            for r in rows:
                if r["ms"] > 0:
                    f = speedup_field(base)
                    r[f] = b["ms"] / r["ms"]
                    lo_b, hi_b = b.get("ms_range") or (None, None)
                    lo_r, hi_r = r.get("ms_range") or (None, None)
                    if r is not b and lo_b and lo_r:
                        r[f + "_range"] = [lo_b / hi_r, hi_b / lo_r]


COLLECTOR = Collector()


def speedup_field(baseline):
    return "speedup_vs_" + re.sub(r"[^0-9a-zA-Z]+", "_", baseline).strip("_").lower()


def register_op(op, *, title, case_fields, providers, baselines, short_names=None, notes=(),
                collector=None, cell="gbps", rate_unit="items/s", summary=None):
    """Declare an op's benchmark.

    case_fields: the row fields that identify a case (e.g. mode, shape, dtype, layout), in table order.
    providers / baselines: {device type: (provider names...)}, in table order; speed-ups are computed
        against every baseline of the row's device type.
    short_names: {provider: short label} for the compact speed-up and memory cells.
    notes: markdown lines for the results file (parameters, traffic model, ...).
    cell: what a table cell shows after the ms: "gbps" (GB/s of the traffic model and % of copy; the
        default), "tflops" (TFLOP/s and % of the bf16 matmul peak: rows recorded with flops=) or "rate"
        (items/s in rate_unit: rows recorded with items=).
    summary: None, or summary(op, device, collector) -> (markdown lines, JSON-able data) printed after the
        device's table and stored in the results JSON under "summary" (e.g. a total over the cases).
    """
    if cell not in ("gbps", "tflops", "rate"):
        raise ValueError("register_op(): cell must be 'gbps', 'tflops' or 'rate', got %r" % (cell,))
    c = collector or COLLECTOR
    c.ops[op] = {"title": title, "case_fields": tuple(case_fields),
                 "providers": {d: tuple(p) for d, p in providers.items()},
                 "baselines": {d: tuple(b) for d, b in baselines.items()},
                 "short_names": dict(short_names or {}), "notes": list(notes),
                 "cell": cell, "rate_unit": rate_unit, "summary": summary}


def skip(op, device, case, provider, reason, collector=None):
    """Skip this provider for this case (pytest.skip), keeping the reason for the summary."""
    c = collector or COLLECTOR
    row = {"op": op, "device": device}
    row.update(case)
    row.update(provider=provider, reason=reason)
    c.skips.append(row)
    c.case_order.setdefault(c.case_key(op, device, row), None)
    pytest.skip("%s not available: %s" % (provider, reason))


def record(benchmark, op, device, case, provider, ms, tensor_bytes=None, tensors=None, min_tensors=None,
           collector=None, *, traffic_bytes=None, min_traffic_bytes=None, flops=None, items=None, **extra):
    """Store one measured row (into benchmark.extra_info when a fixture is given) and return it.

    ms: the median time.  The traffic model (the same for every provider so the GB/s are comparable), either
      tensor_bytes, tensors: bytes of one tensor and how many such tensors the op moves; min_tensors: this
          provider's own minimal traffic in the same unit, when it differs (gbps_min_traffic); or
      traffic_bytes (keyword): the bytes moved, for ops whose tensors differ in size (e.g. a pooling's input
          and output); min_traffic_bytes: this provider's own minimal traffic in bytes, when it differs.
      The traffic model may be left out when flops or items is given.
    flops (keyword): the floating-point operations of one call (the same model for every provider): adds
      flops, tflops and, on cuda once gpu_matmul_tflops() ran, matmul_tflops and pct_of_matmul.
    items (keyword): the items one call processes (e.g. images of a training step): adds items, items_per_s.
    extra: more fields (peak_mem_x, first_call_s, ...); ms_repeats: the medians of REPEATS consecutive slices of
      the timed calls (measure_gpu returns it; cpu_median_ms leaves it in benchmark.extra_info), from which the
      row gets ms_range = [lowest, highest] and its speed-ups their ranges."""
    c = collector or COLLECTOR
    if op not in c.ops:
        raise KeyError("record(): op %r was not registered with register_op()" % (op,))
    no_traffic = (traffic_bytes is None and tensors is None and tensor_bytes is None and min_tensors is None
                  and min_traffic_bytes is None)
    if no_traffic and (flops is not None or items is not None):
        pass   # a compute-bound op or a whole model: no traffic model
    elif (traffic_bytes is None) == (tensors is None or tensor_bytes is None):
        raise TypeError("record(): give either tensor_bytes and tensors, or traffic_bytes")
    if traffic_bytes is None and min_traffic_bytes is not None:
        raise TypeError("record(): min_traffic_bytes goes with traffic_bytes (min_tensors with tensors)")
    if traffic_bytes is not None and min_tensors is not None:
        raise TypeError("record(): min_tensors goes with tensors (min_traffic_bytes with traffic_bytes)")
    ms = float(ms)
    row = benchmark.extra_info if benchmark is not None else {}
    row.update(op=op, device=device)
    row.update(case)
    if no_traffic and (flops is not None or items is not None):
        row.update(provider=provider, ms=ms)
    elif traffic_bytes is None:
        row.update(provider=provider, ms=ms, tensor_bytes=int(tensor_bytes), traffic_tensors=tensors,
                   gbps=tensors * tensor_bytes / (ms * 1e-3) / GB)
        if min_tensors is not None and min_tensors != tensors:
            row["min_traffic_tensors"] = min_tensors
            row["gbps_min_traffic"] = min_tensors * tensor_bytes / (ms * 1e-3) / GB
    else:
        row.update(provider=provider, ms=ms, traffic_bytes=int(traffic_bytes),
                   gbps=traffic_bytes / (ms * 1e-3) / GB)
        if min_traffic_bytes is not None and min_traffic_bytes != traffic_bytes:
            row["min_traffic_bytes"] = int(min_traffic_bytes)
            row["gbps_min_traffic"] = min_traffic_bytes / (ms * 1e-3) / GB
    if device == "cuda" and c.copy_gbps:
        row["copy_gbps"] = c.copy_gbps
        row["pct_of_copy"] = 100.0 * row["gbps"] / c.copy_gbps
        if "gbps_min_traffic" in row:
            row["pct_of_copy_min_traffic"] = 100.0 * row["gbps_min_traffic"] / c.copy_gbps
    if flops is not None:
        row.update(flops=int(flops), tflops=flops / (ms * 1e-3) / 1e12)
        if device == "cuda" and c.matmul_tflops:
            row["matmul_tflops"] = c.matmul_tflops
            row["pct_of_matmul"] = 100.0 * row["tflops"] / c.matmul_tflops
    if items is not None:
        row.update(items=items, items_per_s=items / (ms * 1e-3))
    row.update(extra)
    repeats = [float(v) for v in row.get("ms_repeats") or () if v > 0]
    if len(repeats) >= 2:
        row["ms_range"] = [min(repeats), max(repeats)]
    else:
        row.pop("ms_range", None)
    if row.get("host_ms") is not None:
        row["host_bound"] = bool(row["host_ms"] >= ms)
    c.records.append(row)
    key = c.case_key(op, device, row)
    c.case_order.setdefault(key, None)
    c.update_speedups(op, device, key)
    return row


# --------------------------------------------------------------------------------------------------
# Cases, providers and the correctness check (shared by the bench_<op>.py files)
# --------------------------------------------------------------------------------------------------

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = ("NCHW", "channels_last")
# Tolerances (atol, rtol) of the one correctness check per test: the first call vs torch eager computed
# in fp32 on the same input.
TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 2e-2)}


def make_input(shape, dtype, layout, device):
    """torch.randn of shape, stored NCHW or channels_last."""
    t = torch.randn(shape, device=device, dtype=dtype)
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


def shape_label(shape):
    return "x".join(map(str, shape))


def first_output(out):
    """The tensor to check of a timed function's result (autograd.grad returns a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def mismatch(got, ref, atol, rtol, ignore=None):
    """None if got is close to ref (torch.isclose; elements where the bool mask `ignore` is set are not
    compared), else a description of the mismatch."""
    ok = torch.isclose(got, ref, rtol=rtol, atol=atol)
    if ignore is not None:
        ok = ok | ignore
    if bool(ok.all()):
        return None
    bad = int((~ok).sum())
    err = (got - ref).abs()
    if ignore is not None:
        err = err.masked_fill(ignore, 0)
    err = err.nan_to_num(float("inf")).max().item()
    return ("%d of %d elements off (atol %g, rtol %g), max abs error %g, %d NaN"
            % (bad, ok.numel(), atol, rtol, err, int(got.isnan().sum())))


def exact_mismatch(got, ref):
    """None if got equals ref bit for bit (same dtype and shape, NaN where ref has NaN), else a description."""
    if got.dtype != ref.dtype or got.shape != ref.shape:
        return "dtype/shape %s %s, expected %s %s" % (got.dtype, tuple(got.shape), ref.dtype, tuple(ref.shape))
    nan = got.isnan()
    if torch.equal(nan, ref.isnan()) and torch.equal(got.masked_fill(nan, 0), ref.masked_fill(nan, 0)):
        return None
    differ = (got != ref) & ~(nan & ref.isnan())
    err = (got.double() - ref.double()).abs().nan_to_num(float("inf")).max().item()
    return ("not exact: %d of %d elements differ, max abs difference %g, %d NaN (expected %d)"
            % (int(differ.sum()), got.numel(), err, int(nan.sum()), int(ref.isnan().sum())))


def require_correct(op, device, case, provider, err, ours):
    """err: None, or how the provider's first result differs from the reference.  Ours must be right
    (a mismatch fails the test); a baseline that is wrong (e.g. a miscompile by torch.compile) is skipped
    with the reason: timing a wrong result would be meaningless."""
    if err is None:
        return
    if ours:
        pytest.fail(err)
    skip(op, device, case, provider, "wrong result, not timed: " + err)


def torch_compile_error():
    """None if the torch-compile provider can run on cuda here (inductor generates Triton), else why not."""
    from alexnet_kernels import _backends
    err = _backends.triton_error()
    return "inductor needs Triton on cuda: " + err if err else None


def ours_error(backend, device, needs=()):
    """None if our `backend` can run on `device` here, else why not: _backends.backend_error, and for the
    C++ backends ("cpu", "cuda") whether alexnet_kernels._C has the functions `needs` (an extension built
    before an op's kernels existed lacks them)."""
    from alexnet_kernels import _backends, _extension
    err = _backends.backend_error(backend, device)
    if err is None and backend in ("cpu", "cuda"):
        missing = [f for f in needs if not hasattr(_extension.load(), f)]
        if missing:
            err = ("alexnet_kernels._C has no %s (built before these kernels existed): rebuild it with "
                   "`pip install --no-build-isolation .`" % ", ".join(missing))
    return err


def known_bad(table, key):
    """table.get(key): the reason a case is not run (it crashes the process, taking every later case down
    with it), unless BENCH_RUN_KNOWN_BAD=1."""
    if os.environ.get("BENCH_RUN_KNOWN_BAD", "") not in ("", "0"):
        return None
    return table.get(key)


def first_call(make_fn, sync=None, skip_as=None):
    """Build the function to time (make_fn()) and call it once: (fn, out, wall seconds of both).

    The first call compiles (torch.compile, Triton) and sets up (handles, the y a bwd mode keeps).
    skip_as: (op, device, case, provider) of a baseline: an exception in its setup or first call skips the
    provider with the error (a limitation of the baseline); None (ours): the exception fails the test."""
    t0 = time.perf_counter()
    try:
        fn = make_fn()
        out = fn()
        if sync is not None:
            sync()
    except Exception as exc:
        if skip_as is None:
            raise
        skip(*skip_as, reason="first call raised %s: %s" % (type(exc).__name__,
                                                            (str(exc).strip().splitlines() or [""])[0]))
    return fn, out, time.perf_counter() - t0


def saved_tensor_bytes(fn, input=None):
    """What autograd keeps for the backward of fn() (a forward on an input that requires grad), measured
    with torch.autograd.graph.saved_tensors_hooks: {"saved_bytes": sum of numel * element_size of the
    packed tensors, deduplicated by data_ptr; "saved_input_bytes": the part that is `input`'s own storage
    (kept alive, not allocated)}."""
    packed = {}

    def pack(t):
        packed[t.data_ptr()] = (max(packed.get(t.data_ptr(), (0, False))[0], t.numel() * t.element_size()),
                                input is not None and t.untyped_storage().data_ptr()
                                == input.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return {"saved_bytes": sum(b for b, _ in packed.values()),
            "saved_input_bytes": sum(b for b, is_input in packed.values() if is_input)}


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------

def gpu_time_ms(fn):
    """Median ms of fn on the GPU: triton.testing.do_bench (L2 flushed before every timed call)."""
    from triton.testing import do_bench
    return float(do_bench(fn, **DO_BENCH_KWARGS))


def gpu_times_ms(fn):
    """Every timed call's ms from one do_bench run (the same warm-up, repetitions and L2 flush as gpu_time_ms;
    return_mode="all"), in the order they ran.  A do_bench that returns one number gives a list of one."""
    from triton.testing import do_bench
    try:
        times = do_bench(fn, **dict(DO_BENCH_KWARGS, return_mode="all"))
    except (AssertionError, TypeError, ValueError):   # a do_bench without return_mode="all"
        times = gpu_time_ms(fn)
    if isinstance(times, (list, tuple)):
        return [float(t) for t in times]
    return [float(times)]


def repeat_medians(times_ms, repeats=REPEATS):
    """The medians of `repeats` consecutive, equal slices of the timed calls (fewer slices when there are fewer
    calls): how much one case's median moves while it is measured (load, clocks, other processes)."""
    times = [float(t) for t in times_ms]
    n = min(repeats, len(times))
    bounds = [round(i * len(times) / n) for i in range(n + 1)] if n else []
    return [statistics.median(times[a:b]) for a, b in zip(bounds, bounds[1:])]


def gpu_pedantic(benchmark, fn, rounds=PEDANTIC_ROUNDS):
    """A few synchronised rounds through pytest-benchmark, so that it has a record of the test."""
    def run():
        fn()
        torch.cuda.synchronize()
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)


def first_call_s(fn, sync=None):
    """Wall seconds of one call (with sync), e.g. to see torch.compile's compilation time."""
    t0 = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t0


def host_ms_per_call(fn, calls=10):
    """Host (CPU) ms per call of fn, launching `calls` calls without synchronising in between.

    When it is at least the measured GPU time, do_bench's number is bound by the Python / launch
    overhead, not by the kernels (the GPU idles between launches): record() flags such rows."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t0) / calls * 1e3
    torch.cuda.synchronize()
    return host


def gpu_copy_bandwidth_gbps(collector=None):
    """Device-to-device copy bandwidth (GB/s, read + write), measured once per session."""
    c = collector or COLLECTOR
    if c.copy_gbps is None:
        src = torch.randn(COPY_BYTES // 4, device="cuda", dtype=torch.float32)
        dst = torch.empty_like(src)
        ms = gpu_time_ms(lambda: dst.copy_(src))
        c.copy_ms = ms
        c.copy_gbps = 2 * src.nbytes / (ms * 1e-3) / GB
        del src, dst
        torch.cuda.empty_cache()
    return c.copy_gbps


def gpu_matmul_tflops(collector=None):
    """The bf16 matmul peak (TFLOP/s) of this GPU as torch reaches it: do_bench of a MATMUL_N^3 bf16
    torch.mm (cuBLAS) into a preallocated output, 2 N^3 FLOPs; measured once per session."""
    c = collector or COLLECTOR
    if c.matmul_tflops is None:
        a = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
        ms = gpu_time_ms(lambda: torch.mm(a, b, out=out))
        c.matmul_ms = ms
        c.matmul_tflops = 2.0 * MATMUL_N ** 3 / (ms * 1e-3) / 1e12
        del a, b, out
        torch.cuda.empty_cache()
    return c.matmul_tflops


def peak_extra_memory(fn, ref_nbytes):
    """Peak memory allocated during one call of fn beyond what was allocated before, / ref_nbytes.

    Run it after warm-up (compilation, workspaces) and outside do_bench (its L2-flush buffer)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del out
    return peak / ref_nbytes


def measure_gpu(benchmark, fn, peak_ref_nbytes=None):
    """After the first call (and the correctness check): do_bench's median ms, the medians of REPEATS slices of
    its timed calls, the host ms per call, the peak extra memory over peak_ref_nbytes when given, and
    pytest-benchmark's rounds.  Returns (ms, {"ms_repeats": ..., "host_ms": ..., ["peak_mem_x": ...]})."""
    times = gpu_times_ms(fn)
    ms = statistics.median(times)
    extra = {"ms_repeats": repeat_medians(times), "host_ms": host_ms_per_call(fn)}
    if peak_ref_nbytes is not None:
        extra["peak_mem_x"] = peak_extra_memory(fn, peak_ref_nbytes)
    gpu_pedantic(benchmark, fn)
    return ms, extra


def cpu_median_ms(benchmark, fn, runs=20):
    """The median of pytest-benchmark's rounds (ms), or our own perf_counter median when it has none
    (--benchmark-disable runs fn once without stats).  The medians of REPEATS consecutive slices of those
    rounds go to benchmark.extra_info["ms_repeats"], where record() finds them (the spread)."""
    try:
        stats = benchmark.stats.stats
        median = stats.median
        if median is not None and median > 0:
            _keep_repeats(benchmark, [t * 1e3 for t in getattr(stats, "data", ())])
            return float(median) * 1e3
    except AttributeError:
        pass
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    _keep_repeats(benchmark, times)
    return statistics.median(times)


def _keep_repeats(benchmark, times_ms):
    info = getattr(benchmark, "extra_info", None)
    if isinstance(info, dict) and times_ms:
        info["ms_repeats"] = repeat_medians(times_ms)


_dynamo_configured = []


def configure_dynamo():
    """Room for one compiled graph per benchmarked case, and fail (never fall back to eager silently)
    if a recompile limit is hit anyway.  Names differ across torch versions: set those that exist."""
    if _dynamo_configured:
        return
    import torch._dynamo.config as cfg
    for name, value in (("recompile_limit", 256), ("cache_size_limit", 256),
                        ("accumulated_recompile_limit", 4096), ("accumulated_cache_size_limit", 4096),
                        ("fail_on_recompile_limit_hit", True)):
        if hasattr(cfg, name):
            try:
                setattr(cfg, name, value)
            except Exception:  # an alias that cannot be set in this version
                pass
    _dynamo_configured.append(True)


_compiled = {}


def compiled(fn, key, **compile_kwargs):
    """torch.compile(fn) once per key (e.g. shape, dtype, layout), cached for the session.

    Each key gets its own copy of fn's code object, so Dynamo's per-code cache (and recompile limit)
    holds only that key's graphs (inference and training), and dynamic=False keeps every graph
    specialised to its static shape (no automatic dynamic-shape recompile)."""
    full_key = (fn.__module__, fn.__qualname__, key)
    if full_key not in _compiled:
        configure_dynamo()
        name = "%s_%d" % (fn.__name__, len(_compiled))
        code = fn.__code__.replace(co_name=name)
        clone = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
        compile_kwargs.setdefault("dynamic", False)
        _compiled[full_key] = torch.compile(clone, **compile_kwargs)
    return _compiled[full_key]


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------

def slugify(text):
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unknown"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def environment(collector=None):
    c = collector or COLLECTOR
    env = {"date": c.started.date().isoformat(), "started": c.started.isoformat(timespec="seconds"),
           "python": platform.python_version(), "platform": platform.platform(),
           "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        env["cudnn"] = None
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = None
    try:
        import pytest_benchmark
        env["pytest_benchmark"] = pytest_benchmark.__version__
    except Exception:
        env["pytest_benchmark"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=p.name, gpu=p.name, compute_capability="sm_%d%d" % (p.major, p.minor),
                   sm_count=p.multi_processor_count, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1),
                   driver=_driver_version())
    else:
        env["device"] = "CPU: %s" % env["cpu"]
    try:
        import alexnet_kernels
        env["alexnet_kernels"] = alexnet_kernels.__version__
        env["alexnet_kernels_build"] = alexnet_kernels.build_info()
    except Exception as exc:
        env["alexnet_kernels"] = "import failed: %s" % exc
    env["copy_gbps"] = c.copy_gbps
    env["copy_ms"] = c.copy_ms
    if c.matmul_tflops is not None:
        env["matmul_tflops"] = c.matmul_tflops
        env["matmul_ms"] = c.matmul_ms
        env["matmul_probe"] = "torch.mm of two %dx%d bf16 matrices, do_bench median" % (MATMUL_N, MATMUL_N)
    env["timing"] = {"gpu": "triton.testing.do_bench(%s), L2 flushed before each timed call"
                            % ", ".join("%s=%r" % kv for kv in DO_BENCH_KWARGS.items()),
                     "cpu": "pytest-benchmark rounds, median"}
    return env


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------

DEVICE_TITLES = {"cuda": "GPU", "cpu": "CPU"}
HOST_BOUND_NOTE = ("* host-bound: issuing one call takes the CPU at least as long as the measured time "
                   "(host_ms in the JSON), so the GPU idles between launches and the number measures "
                   "Python / launch overhead more than the kernels")


def _fmt_ms(ms):
    return "%.4f" % ms if ms < 1 else "%.3f" % ms if ms < 100 else "%.1f" % ms


def _fmt_gbps(v):
    return "%.0f" % v if v >= 100 else "%.3g" % v


def _fmt_tflops(v):
    return "%.0f" % v if v >= 100 else "%.3g" % v


def _fmt_rate(v):
    return "{:,.0f}".format(v) if v >= 100 else "%.3g" % v


def _fmt_ms4(ms):
    """ms to 4 significant digits (0.1230, 3.360, 28.90, 1086)."""
    if not ms > 0 or ms >= 1000:
        return "%.0f" % ms
    return "%.*f" % (max(0, 3 - int(math.floor(math.log10(ms)))), ms)


def _fmt_ms_cell(r):
    """'3.360 (3.300–3.510)': the median ms and the lowest–highest of the repeats' medians."""
    cell = _fmt_ms4(r["ms"])
    if r.get("ms_range"):
        cell += " (%s–%s)" % tuple(_fmt_ms4(v) for v in r["ms_range"])
    return cell + (" *" if r.get("host_bound") else "")


def _fmt_ratio(v):
    return "%.2g" % v if v < 0.1 else "%.2f" % v if v < 10 else "%.1f" % v if v < 100 else "%.0f" % v


def _fmt_speedup(r, field):
    """'8.60× (8.1–9.2)', or '' when the row has no such speed-up."""
    if field not in r:
        return ""
    cell = _fmt_ratio(r[field]) + "×"
    if r.get(field + "_range"):
        cell += " (%s–%s)" % tuple(_fmt_ratio(v) for v in r[field + "_range"])
    return cell


# Per cell style: the throughput column (row field, header, formatter) and the ceiling column (row field, header).
THROUGHPUT = {"gbps": ("gbps", "GB/s", _fmt_gbps), "tflops": ("tflops", "TFLOP/s", _fmt_tflops),
              "rate": ("items_per_s", None, _fmt_rate)}
CEILING_PCT = {"gbps": ("pct_of_copy", "% of copy"), "tflops": ("pct_of_matmul", "% of matmul peak")}

CELL_DESCRIPTIONS = {
    "gbps": "median ms (lowest–highest of the repeats' medians), GB/s of the traffic model, % of the copy bandwidth",
    "tflops": "median ms (lowest–highest of the repeats' medians), TFLOP/s of the FLOP model, % of the measured "
              "bf16 matmul peak",
    "rate": "median ms (lowest–highest of the repeats' medians), throughput",
}
SUMMARY_LEGEND = (
    "median ms (range): the median, and the lowest–highest median of %d consecutive slices of the timed calls"
    % REPEATS,
    "GB/s: the op's traffic model / time (TFLOP/s or img/s where the header says so); % of copy: of the GPU's "
    "measured copy bandwidth",
    "speed-up vs X: X's median ms / this provider's (> 1: faster than X); (range): X's fastest slice against "
    "this provider's slowest, and the reverse",
)
SPEEDUP_DESCRIPTION = ("speed-up vs X: X's median ms / this provider's (> 1: faster than X); in brackets its range "
                       "over the repeats (X's fastest repeat against this provider's slowest, and the reverse); "
                       "a repeat is the median of one of %d consecutive slices of a case's timed calls" % REPEATS)


def devices_of(op, collector=None):
    c = collector or COLLECTOR
    seen = [r["device"] for r in c.records + c.skips if r["op"] == op]
    order = list(c.ops[op]["providers"])
    return [d for d in order if d in seen] + sorted(set(seen) - set(order))


def _providers_of(op, device, c):
    spec = c.ops[op]
    providers = list(spec["providers"].get(device, ()))
    return providers + sorted({r["provider"] for r in c.rows_of(op, device)} - set(providers))


def case_table(op, device, collector=None):
    """(header, rows of cells, cases) for one op and device type: one row per provider measured or skipped in
    each case (the case's fields on its first row only), with plain columns: the median ms and its range, the
    throughput, % of the ceiling, one speed-up column per baseline, the memory columns the rows have."""
    c = collector or COLLECTOR
    spec = c.ops[op]
    fields = spec["case_fields"]
    style = spec.get("cell", "gbps")
    rows_here = c.rows_of(op, device)
    providers = _providers_of(op, device, c)
    bases = spec["baselines"].get(device, ())
    keys = [k for k in c.case_order if k[:2] == (op, device)]
    tp_field, tp_header, tp_fmt = THROUGHPUT[style]
    tp_header = tp_header or spec.get("rate_unit", "items/s")
    if not any(tp_field in r for r in rows_here) and any("gbps" in r for r in rows_here):
        tp_field, tp_header, tp_fmt = THROUGHPUT["gbps"]   # e.g. a tflops op recorded with a traffic model
    pct = CEILING_PCT.get(style if tp_field != "gbps" else "gbps")
    has_pct = pct is not None and any(pct[0] in r for r in rows_here)
    memory = [(f, h) for f, h in (("peak_mem_x", "peak extra mem (x input)"), ("saved_x", "saved for bwd (x input)"),
                                  ("peak_mem_gib", "peak extra mem (GiB)")) if any(f in r for r in rows_here)]
    header = (list(fields) + ["provider", "median ms (range)", tp_header] + ([pct[1]] if has_pct else [])
              + ["speed-up vs %s" % b for b in bases] + [h for _, h in memory])
    table, cases = [], []
    for key in keys:
        rows = {r["provider"]: r for r in rows_here if c.case_key(op, device, r) == key}
        skipped = {s["provider"]: s["reason"] for s in c.skips
                   if s["op"] == op and c.case_key(op, device, s) == key}
        case = dict(zip(fields, key[2:]))
        case["providers"] = {}
        first = True
        for p in providers:
            r = rows.get(p)
            if r is None and p not in skipped:
                continue   # not run (deselected with -k, or the run stopped)
            cells = [str(v) for v in key[2:]] if first else [""] * len(fields)
            first = False
            cells.append(p)
            if r is None:
                case["providers"][p] = {"skipped": skipped[p]}
                cells += ["skipped"] + [""] * (len(header) - len(cells) - 1)
                table.append(cells)
                continue
            case["providers"][p] = {k: v for k, v in r.items() if k not in fields and k not in (
                "op", "device", "provider")}
            cells += [_fmt_ms_cell(r), tp_fmt(r[tp_field]) if tp_field in r else ""]
            if has_pct:
                cells.append("%.0f" % r[pct[0]] if pct[0] in r else "")
            for b in bases:
                cells.append("baseline" if p == b else _fmt_speedup(r, speedup_field(b)))
            for f, _ in memory:
                cells.append(("%.2f" if f != "saved_x" else "%.3g") % r[f] if f in r else "")
            table.append(cells)
        cases.append(case)
    return header, table, cases


def markdown_table(header, rows):
    """A markdown table with padded columns, readable in a terminal too."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    line = lambda cells: "| " + " | ".join(str(x).ljust(w) for x, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]


def skip_lines(op, device, collector=None):
    """'provider: reason (n cases)' for every distinct skip reason."""
    c = collector or COLLECTOR
    counts = {}
    for s in c.skips:
        if s["op"] == op and s["device"] == device:
            counts[(s["provider"], s["reason"])] = counts.get((s["provider"], s["reason"]), 0) + 1
    return ["- skipped %s (%d case%s): %s" % (p, n, "" if n == 1 else "s", reason)
            for (p, reason), n in counts.items()]


def op_summary_lines(op, collector=None, markdown=False):
    c = collector or COLLECTOR
    spec = c.ops[op]
    lines = []
    for device in devices_of(op, c):
        header, rows, _ = case_table(op, device, c)
        title = "%s %s (%s)" % (spec["title"], DEVICE_TITLES.get(device, device), device)
        if markdown:
            lines += ["## " + title, ""]
        else:
            lines += ["", "== %s ==" % title]
        if device == "cuda" and c.copy_gbps and spec.get("cell", "gbps") == "gbps":
            lines.append("copy bandwidth (1 GiB fp32 device-to-device copy, read + write): %.0f GB/s"
                         % c.copy_gbps)
        if device == "cuda" and c.matmul_tflops and spec.get("cell") == "tflops":
            lines.append("bf16 matmul peak (%d^3 torch.mm): %.0f TFLOP/s" % (MATMUL_N, c.matmul_tflops))
        compile_s = sum(r.get("first_call_s", 0.0) for r in c.rows_of(op, device)
                        if r["provider"] == "torch-compile")
        if compile_s:
            lines.append("torch-compile first calls (compilation included): %.1f s in total" % compile_s)
        if markdown and lines[-1] != "":
            lines.append("")
        lines += markdown_table(header, rows) if rows else ["(no cases)"]
        if any(r.get("host_bound") for r in c.rows_of(op, device)):
            lines += ["", HOST_BOUND_NOTE]
        sk = skip_lines(op, device, c)
        if sk:
            lines += [""] + sk
        extra = summary_of(op, device, c)[0]
        if extra:
            lines += [""] + extra
        if markdown:
            lines.append("")
    return lines


def summary_of(op, device, collector=None):
    """(lines, data) of the op's summary hook for one device type (register_op(summary=...)), or ([], None).
    A failing hook is reported in the lines, never raised (the tables must still be printed and written)."""
    c = collector or COLLECTOR
    fn = c.ops[op].get("summary")
    if fn is None:
        return [], None
    try:
        lines, data = fn(op, device, c)
    except Exception as exc:
        return ["summary failed: %s: %s" % (type(exc).__name__, exc)], None
    return list(lines or []), data


def summary_lines(collector=None):
    c = collector or COLLECTOR
    lines = []
    for op in c.ops:
        if any(r["op"] == op for r in c.records + c.skips):
            lines += op_summary_lines(op, c)
    return lines


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------

def results_dir():
    return Path(os.environ.get("BENCH_RESULTS_DIR") or RESULTS_DIR)


def _has_gpu_rows(op, c):
    return any(r["op"] == op and r["device"] == "cuda" for r in c.records)


def should_write(op, collector=None):
    c = collector or COLLECTOR
    forced = os.environ.get("BENCH_WRITE_RESULTS", "").strip().lower()
    if forced:
        return forced not in ("0", "false", "no", "off")
    return _has_gpu_rows(op, c)


def results_stem(op, collector=None):
    """<op>-<gpu name>-<date>, or <op>-cpu-<cpu model>-<date> when no GPU row was measured."""
    c = collector or COLLECTOR
    if _has_gpu_rows(op, c) and torch.cuda.is_available():
        slug = slugify(torch.cuda.get_device_name(0))
    else:
        slug = "cpu-" + slugify(cpu_name())
    stem = "%s-%s-%s" % (op, slug, c.started.date().isoformat())
    suffix = slugify(os.environ.get("BENCH_RESULTS_SUFFIX", "")) if os.environ.get("BENCH_RESULTS_SUFFIX") else ""
    return stem + "-" + suffix if suffix else stem


def _json_default(o):
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    return repr(o)


def markdown_document(op, env, collector=None, picture=None):
    c = collector or COLLECTOR
    spec = c.ops[op]
    lines = ["# %s benchmarks: %s, %s" % (spec["title"], env.get("device"), env["date"]), ""]
    versions = ["torch %s" % env["torch"], "triton %s" % env.get("triton"), "CUDA %s" % env.get("cuda"),
                "cuDNN %s" % env.get("cudnn"), "python %s" % env["python"],
                "pytest-benchmark %s" % env.get("pytest_benchmark")]
    lines.append("- device: %s" % env.get("device")
                 + (" (%s, %s SMs, %s GiB, driver %s)" % (env.get("compute_capability"), env.get("sm_count"),
                                                           env.get("gpu_memory_gib"), env.get("driver"))
                    if "gpu" in env else ""))
    lines.append("- CPU: %s (%s cores, torch threads %s)" % (env["cpu"], env["cpu_count"], env["torch_threads"]))
    lines.append("- versions: " + ", ".join(versions))
    lines.append("- alexnet_kernels %s, extension build: %s" % (env.get("alexnet_kernels"),
                                                              env.get("alexnet_kernels_build")))
    lines.append("- run started %s" % env["started"])
    if env.get("copy_gbps"):
        lines.append("- copy bandwidth (1 GiB fp32 device-to-device copy, read + write counted): %.0f GB/s"
                     % env["copy_gbps"])
    if env.get("matmul_tflops"):
        lines.append("- bf16 matmul peak (%s): %.0f TFLOP/s" % (env.get("matmul_probe"), env["matmul_tflops"]))
    if env.get("cpu_ceilings"):
        lines.append("- CPU ceilings drawn in the picture: copy %.3g GB/s, fp32 matmul %.3g TFLOP/s (%s)" % (
            env["cpu_ceilings"]["copy_gbps"], env["cpu_ceilings"]["matmul_tflops"], env["cpu_ceilings"]["probe"]))
    lines.append("- GPU timing: %s; CPU timing: %s" % (env["timing"]["gpu"], env["timing"]["cpu"]))
    lines.append("- columns: %s; %s" % (CELL_DESCRIPTIONS[spec.get("cell", "gbps")], SPEEDUP_DESCRIPTION))
    lines += ["- " + n for n in spec["notes"]]
    lines.append("")
    if picture is not None:
        lines += ["![%s: throughput per provider against the measured ceiling](%s)" % (spec["title"], picture), ""]
    lines += op_summary_lines(op, c, markdown=True)
    return "\n".join(lines).rstrip() + "\n"


def write_results(collector=None, force=None):
    """Write <stem>.md, <stem>.json and the picture <stem>.png (plot_op; needs matplotlib, BENCH_PLOTS=0 leaves it
    out) for every op with rows (see should_write); returns the paths."""
    c = collector or COLLECTOR
    paths = []
    env = None
    for op in c.ops:
        if not any(r["op"] == op for r in c.records):
            continue
        if not (should_write(op, c) if force is None else force):
            continue
        env = env or environment(c)
        out = results_dir()
        out.mkdir(parents=True, exist_ok=True)
        stem = results_stem(op, c)
        png_path = out / (stem + ".png")
        picture = None
        if os.environ.get("BENCH_PLOTS", "1").strip().lower() not in ("0", "false", "no", "off"):
            try:
                picture = png_path if plot_op(op, png_path, c) else None
            except Exception as exc:  # the tables matter more than the picture
                env.setdefault("plot_errors", {})[op] = "%s: %s" % (type(exc).__name__, exc)
        if c.cpu_ceilings:
            env["cpu_ceilings"] = dict(c.cpu_ceilings)
        doc = {"op": op, "title": c.ops[op]["title"], "date": env["date"], "environment": env,
               "copy_gbps": c.copy_gbps, "matmul_tflops": c.matmul_tflops, "case_fields": list(c.ops[op]["case_fields"]),
               "providers": c.ops[op]["providers"], "baselines": c.ops[op]["baselines"],
               "notes": c.ops[op]["notes"], "cases": {}, "records": [], "skipped": []}
        for device in devices_of(op, c):
            doc["cases"][device] = case_table(op, device, c)[2]
        if c.ops[op].get("summary") is not None:
            doc["summary"] = {}
            for device in devices_of(op, c):
                lines, data = summary_of(op, device, c)
                doc["summary"][device] = {"lines": lines, "data": data}
        doc["records"] = [r for r in c.records if r["op"] == op]
        doc["skipped"] = [s for s in c.skips if s["op"] == op]
        md_path, json_path = out / (stem + ".md"), out / (stem + ".json")
        md_path.write_text(markdown_document(op, env, c, picture=picture.name if picture else None))
        json_path.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
        paths += [md_path, json_path] + ([picture] if picture else [])
    return paths


# --------------------------------------------------------------------------------------------------
# Pictures: the roofline at a glance
# --------------------------------------------------------------------------------------------------

CPU_COPY_BYTES = 2 ** 28   # the CPU ceilings' probes (for the pictures): a 256 MiB fp32 copy and a
CPU_MATMUL_N = 2048        # 2048^3 fp32 torch.mm, medians of CPU_PROBE_RUNS
CPU_PROBE_RUNS = 5


def cpu_ceilings(collector=None):
    """{"copy_gbps", "matmul_tflops"} of this CPU as torch reaches them with its threads (read + write of a
    256 MiB fp32 copy_; a 2048^3 fp32 torch.mm), perf_counter medians, measured once per session -- the
    ceilings drawn in the CPU pictures."""
    c = collector or COLLECTOR
    if c.cpu_ceilings is None:
        def median_s(fn):
            fn()
            times = []
            for _ in range(CPU_PROBE_RUNS):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)
        src = torch.randn(CPU_COPY_BYTES // 4)
        dst = torch.empty_like(src)
        copy_s = median_s(lambda: dst.copy_(src))
        a, b = torch.randn(CPU_MATMUL_N, CPU_MATMUL_N), torch.randn(CPU_MATMUL_N, CPU_MATMUL_N)
        out = torch.empty(CPU_MATMUL_N, CPU_MATMUL_N)
        mm_s = median_s(lambda: torch.mm(a, b, out=out))
        c.cpu_ceilings = {"copy_gbps": 2 * src.nbytes / copy_s / GB,
                          "matmul_tflops": 2.0 * CPU_MATMUL_N ** 3 / mm_s / 1e12,
                          "probe": "fp32 copy_ of %d MiB (read + write) and %d^3 fp32 torch.mm, %d threads, "
                                   "perf_counter medians of %d" % (CPU_COPY_BYTES // 2 ** 20, CPU_MATMUL_N,
                                                                   torch.get_num_threads(), CPU_PROBE_RUNS)}
    return c.cpu_ceilings


def _ceiling(style, device, c):
    """(value, label) of the roofline the picture draws for this cell style and device, or (None, None)."""
    if style == "gbps":
        if device == "cuda" and c.copy_gbps:
            return c.copy_gbps, "copy bandwidth, measured: %.0f GB/s" % c.copy_gbps
        if device == "cpu":
            v = cpu_ceilings(c)["copy_gbps"]
            return v, "copy bandwidth (%d MiB, measured): %.3g GB/s;\ncache-resident cases can exceed it" % (
                CPU_COPY_BYTES // 2 ** 20, v)
    if style == "tflops":
        if device == "cuda" and c.matmul_tflops:
            return c.matmul_tflops, "bf16 matmul peak, measured: %.0f TFLOP/s" % c.matmul_tflops
        if device == "cpu":
            v = cpu_ceilings(c)["matmul_tflops"]
            return v, "fp32 matmul (%d^3 torch.mm, measured): %.3g TFLOP/s" % (CPU_MATMUL_N, v)
    return None, None


def plot_op(op, path, collector=None):
    """Draw the op's picture into path (PNG): one panel per device type, one group of horizontal bars per case,
    one bar per measured provider -- its GB/s (TFLOP/s for compute-bound ops, items/s for whole models), the
    range over the repeats as an error bar -- and the measured ceiling (copy bandwidth / matmul peak) as a
    vertical line.  False, with nothing written, when matplotlib is missing.  Redrawn only when the op's rows
    changed since the last call."""
    c = collector or COLLECTOR
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    spec = c.ops[op]
    style = spec.get("cell", "gbps")
    signature = (str(path), len(c.rows_of(op, "cuda")), len(c.rows_of(op, "cpu")),
                 tuple(sorted({r["device"] for r in c.records if r["op"] == op})))
    if c.plotted.get(op) == signature and Path(path).exists():
        return True
    panels = []
    for device in devices_of(op, c):
        rows = c.rows_of(op, device)
        if not rows:
            continue
        field, unit, _ = THROUGHPUT[style]
        dev_style = style
        if not any(field in r for r in rows) and any("gbps" in r for r in rows):
            field, unit, dev_style = "gbps", "GB/s", "gbps"
        unit = unit or spec.get("rate_unit", "items/s")
        keys = [k for k in c.case_order if k[:2] == (op, device) and any(
            c.case_key(op, device, r) == k and field in r for r in rows)]
        providers = [p for p in _providers_of(op, device, c) if any(r["provider"] == p and field in r for r in rows)]
        panels.append((device, field, unit, dev_style, keys, providers, rows))
    if not panels:
        return False
    heights = [max(2.0, len(keys) * (0.1 * len(providers) + 0.15) + 1.2) for _, _, _, _, keys, providers, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, sum(heights) + 0.8),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C%d" % i for i in range(10)])
    for ax, (device, field, unit, dev_style, keys, providers, rows) in zip(axes[:, 0], panels):
        n = max(1, len(providers))
        bar = 0.8 / n
        labels, labelled = [], set()
        for i, key in enumerate(keys):
            labels.append(" ".join(str(v) for v in key[2:]))
            by = {r["provider"]: r for r in rows if c.case_key(op, device, r) == key}
            for j, p in enumerate(providers):
                r = by.get(p)
                if r is None or field not in r:
                    continue
                v = r[field]
                err = None
                if r.get("ms_range"):   # throughput scales as 1 / ms
                    lo, hi = v * r["ms"] / r["ms_range"][1], v * r["ms"] / r["ms_range"][0]
                    err = [[max(0.0, v - lo)], [max(0.0, hi - v)]]
                y = i + (j - (n - 1) / 2) * bar
                ax.barh(y, v, height=bar * 0.9, color=colours[j % len(colours)], xerr=err, capsize=2,
                        label=None if p in labelled else p)
                labelled.add(p)
        ceiling, ceiling_label = _ceiling(dev_style, device, c)
        if ceiling:
            ax.axvline(ceiling, color="black", linestyle="--", linewidth=1.2, label=ceiling_label)
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(unit + (" (traffic model)" if field == "gbps" else ""))
        ax.set_title("%s, %s (%s): %s per provider%s" % (
            spec["title"], DEVICE_TITLES.get(device, device), device, unit, " against the measured ceiling"
            if ceiling else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp-%d.png" % os.getpid())
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    c.plotted[op] = signature
    return True


def gpu_params(modes, shapes, providers, layouts=None):
    """pytest params (mode, (C, H, W), dtype name, layout, provider) over the whole GPU grid of an op, with
    ids mode-shape-dtype-layout-provider (select with -k).  layouts: the layout labels (default LAYOUTS;
    e.g. ("row-major",) for an op on 2-D (M, N) inputs, whose shapes are then the (M, N) pairs)."""
    layouts = LAYOUTS if layouts is None else tuple(layouts)
    return [pytest.param(mode, chw, dname, layout, provider,
                         id="%s-%s-%s-%s-%s" % (mode, shape_label(chw), dname, layout, provider))
            for mode in modes for chw in shapes for dname in DTYPES for layout in layouts for provider in providers]
