"""Timing: do_bench on a GPU (L2 flushed before each timed call), pytest-benchmark's rounds on a CPU, the spread over
REPEATS slices of the timed calls, host time per call, peak extra memory, and torch.compile once per case.
"""
import statistics
import time
import types

import torch


DO_BENCH_KWARGS = {"warmup": 25, "rep": 100, "return_mode": "median"}
PEDANTIC_ROUNDS = 3
REPEATS = 5           # the spread: medians of this many consecutive slices of one case's timed calls


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
