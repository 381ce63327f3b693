"""CPU cases timed so that a shared machine cannot fake a result: every provider of a case is built and checked first,
then timed in the same process over ROUNDS rounds, each round calling every provider in an order rotated by one per
round (a burst of other load lands on all of them alike); a provider's time is the median of its round medians,
its range the lowest and highest round median.  The stall rule: where a provider's round medians disagree by more
than STALL_BOUND (spread(): the slowest over the fastest, the single slowest and fastest rounds set aside from
TRIM_FROM rounds on), the whole case is measured again (up to STALL_RETRIES times, each provider keeping
its steadiest attempt); a provider still beyond the bound is recorded as stalled -- kept in the JSON, shown as
"stalled" in the tables, and never part of a speed-up.

BENCH_PROVIDERS=name,name,...  limits the CPU cases to those providers (the others are not run, as -k would
deselect them; the CPU test ids name the case, not the provider).
"""
import math
import os
import statistics
import time

import pytest

from .cases import case_of, seeded_inputs
from .ceilings import cpu_ceilings
from .collect import record, skip
from .peers import ONNX_PEERS, onnx_peer_fn, peer_error


ROUNDS = 7
MIN_ROUNDS = 3
CASE_BUDGET_S = 20.0     # a case's rounds, all providers together (slow cases get fewer rounds, not less care)
ROUND_TARGET_MS = 25.0   # each provider's share of a round: enough calls that a 0.1 ms op is not timer noise
MAX_CALLS = 64
STALL_BOUND = 2.0        # slowest / fastest round median beyond which a provider's figure is not a result
STALL_RETRIES = 1
TRIM_FROM = 5            # rounds from which spread() sets the slowest and the fastest round aside


def calls_per_round(ms, target_ms=ROUND_TARGET_MS, max_calls=MAX_CALLS):
    """How many consecutive calls make one provider's share of a round (their median is its round value)."""
    if not ms > 0:
        return max_calls
    return max(1, min(max_calls, int(math.ceil(target_ms / ms))))


def rotated(names, shift):
    """names rotated left by shift (round r of an interleaved measurement starts with provider r mod n)."""
    names = list(names)
    if not names:
        return names
    shift %= len(names)
    return names[shift:] + names[:shift]


def interleaved_round_ms(fns, rounds=ROUNDS, calls=None, clock=time.perf_counter):
    """{name: [ms of each round]} for the functions fns {name: fn}: every round calls each fn calls[name] times in
    a row (default once), in an order rotated by one per round; a round's value is the median of those calls."""
    calls = calls or {}
    out = {name: [] for name in fns}
    for r in range(rounds):
        for name in rotated(fns, r):
            fn, times = fns[name], []
            for _ in range(calls.get(name, 1)):
                t0 = clock()
                fn()
                times.append((clock() - t0) * 1e3)
            out[name].append(statistics.median(times))
    return out


def spread(values):
    """How far a provider's round values disagree: the slowest over the fastest, once the single slowest and
    fastest rounds are set aside when there are TRIM_FROM or more (one outlier each way cannot move the median of
    that many; more can).  1.0: all alike; inf with a zero."""
    values = sorted(float(v) for v in values)
    if not values:
        return float("nan")
    if len(values) >= TRIM_FROM:
        values = values[1:-1]
    return values[-1] / values[0] if values[0] > 0 else float("inf")


def stalled(round_ms, bound=STALL_BOUND):
    """The providers of one measurement whose round values disagree beyond bound (spread() > bound)."""
    return [name for name, values in round_ms.items() if not spread(values) <= bound]


def measure_interleaved(fns, rounds=None, bound=STALL_BOUND, retries=STALL_RETRIES, calls=None,
                        measure=interleaved_round_ms):
    """{name: {"ms", "ms_repeats", "rounds", "calls_per_round", "spread", "attempts", "stalled"}}: fns timed by
    measure() (interleaved rounds), measured again while any provider is beyond the stall bound (at most
    `retries` more times), each provider keeping the attempt whose rounds agree best (smallest spread).
    calls: {name: calls per round} (default: from one timed call each, calls_per_round()).  rounds: None:
    ROUNDS, or fewer (down to MIN_ROUNDS) where ROUNDS rounds of these providers would take more than
    CASE_BUDGET_S (one timed call each tells)."""
    if calls is None or rounds is None:
        call_ms = {}
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            call_ms[name] = (time.perf_counter() - t0) * 1e3
        calls = calls or {name: calls_per_round(ms) for name, ms in call_ms.items()}
        if rounds is None:
            round_s = sum(calls[name] * ms for name, ms in call_ms.items()) / 1e3
            rounds = max(MIN_ROUNDS, min(ROUNDS, int(CASE_BUDGET_S / round_s) if round_s > 0 else ROUNDS))
    best, attempts = {}, 0
    while True:
        attempts += 1
        got = measure(fns, rounds=rounds, calls=calls)
        for name, values in got.items():
            if name not in best or spread(values) < spread(best[name]):
                best[name] = values
        if not stalled(best, bound) or attempts > retries:
            break
    return {name: {"ms": statistics.median(values), "ms_repeats": list(values), "rounds": len(values),
                   "calls_per_round": calls.get(name, 1), "spread": spread(values), "attempts": attempts,
                   "stalled": not spread(values) <= bound}
            for name, values in best.items()}


COPY_PROBE = "copy"   # the pseudo-provider of a case's copy probe
# The probe copies at least this much: a memory copy, not a cached one (a batch-1 input fits in the caches, and a
# small copy_ on a shared machine times torch's thread hand-off more than the memory).
COPY_PROBE_MIN_BYTES = 64 * 2 ** 20


def run_cpu_case(benchmark, op, case, providers, make, check, record_kwargs, ours=(), rounds=None,
                 collector=None, copy_bytes=None):
    """Build, check and time one CPU case of every provider, interleaved (see the module docstring), and record a
    row per provider.

    providers: names in table order.  make(provider) -> the function to time (returning its output), or a str:
    why the provider cannot run here (skipped with it).  check(provider, output) -> None, or how the first call's
    output is wrong.  record_kwargs(provider) -> record()'s keywords (traffic model, flops, items, extras).
    ours: providers that must work -- raising or a wrong result fails the test; any other provider that raises
    or is wrong is skipped with the reason.  rounds: of the interleaved timing (None: measure_interleaved's
    choice).  The copy bandwidth (cpu_ceilings) is measured once per session, before the first case, for the % of
    copy.  copy_bytes: the size of a copy (dst.copy_(src), fp32) timed in the same rounds as the providers: its
    bandwidth (read + write) is the rows' copy_gbps and % of copy -- the ceiling under the same load; where the
    probe itself stalled, the session's (cpu_ceilings) instead.  Returns
    {provider: its row}."""
    selected = [p.strip() for p in os.environ.get("BENCH_PROVIDERS", "").split(",") if p.strip()]
    providers = [p for p in providers if not selected or p in selected]
    cpu_ceilings(collector)
    benchmark.group = "%s-cpu %s" % (op, " ".join(map(str, case.values())))
    fns, first_s = {}, {}
    for provider in providers:
        t0 = time.perf_counter()
        try:   # the setup (a compile, a runtime session) and the first call
            fn = make(provider)
            out = None if isinstance(fn, str) else fn()
        except Exception as exc:
            if provider in ours:
                raise
            fn = "setup or first call raised %s: %s" % (type(exc).__name__,
                                                        (str(exc).strip().splitlines() or [""])[0])
        seconds = time.perf_counter() - t0
        err = fn if isinstance(fn, str) else check(provider, out)
        del out
        if err is not None and provider in ours and not isinstance(fn, str):
            pytest.fail(err)
        if err is not None:
            skip(op, "cpu", case, provider, err if isinstance(fn, str) else "wrong result, not timed: " + err,
                 collector, stop=False)
            continue
        fns[provider], first_s[provider] = fn, seconds
    if not fns:
        pytest.skip("no provider of this case can run here")
    probe = {}
    if copy_bytes:
        import torch
        src = torch.randn(max(1, int(copy_bytes) // 4))
        dst = torch.empty_like(src)
        fns[COPY_PROBE] = lambda: dst.copy_(src)
        probe = {"copy_probe_bytes": src.nbytes}
    measured = measure_interleaved(fns, rounds=rounds)
    copy = measured.pop(COPY_PROBE, None)
    fns.pop(COPY_PROBE, None)
    if copy is not None:
        probe["copy_probe_stalled"] = copy["stalled"]
        probe["copy_probe_ms_range"] = [min(copy["ms_repeats"]), max(copy["ms_repeats"])]
        if not copy["stalled"]:
            probe["copy_gbps"] = 2 * src.nbytes / (copy["ms"] * 1e-3) / 1e9
    holder = next((p for p in fns if p in ours), next(iter(fns)))
    benchmark.pedantic(fns[holder], rounds=1, iterations=1, warmup_rounds=0)   # pytest-benchmark's own record
    rows = {}
    for provider in fns:
        m = measured[provider]
        rows[provider] = record(benchmark if provider == holder else None, op, "cpu", case, provider, m["ms"],
                                first_call_s=first_s[provider], ms_repeats=m["ms_repeats"], rounds=m["rounds"],
                                calls_per_round=m["calls_per_round"], round_spread=m["spread"],
                                attempts=m["attempts"], stalled=m["stalled"], collector=collector,
                                **dict(record_kwargs(provider), **probe))
    return rows


def cpu_provider_fn(provider, mode, build_torch, graph, x, output_shape):
    """make() of run_cpu_case for one CPU provider: an ONNX runtime ("onnxruntime", "openvino") runs graph() -- an
    onnx.ModelProto, built only when that runtime is here -- on x into a preallocated output_shape (forward only);
    every other provider (ours, torch eager, torch-compile) times build_torch().  A str: why it cannot run."""
    if provider in ONNX_PEERS:
        return peer_error(provider, mode) or onnx_peer_fn(provider, graph(), x, output_shape)
    return build_torch()


def run_op_cpu_case(benchmark, bench, mode, shape, providers, error, graph):
    """One CPU test of an OpBench (cases.py), fp32 NCHW: seeded inputs, then run_cpu_case over providers.
    error(provider) -> None or why it cannot run here (ours and torch's providers); graph() -> the ONNX model the
    runtimes run (forward only)."""
    import torch
    layout = "NCHW"
    x, dy = seeded_inputs(shape, bench.output_shape(shape), torch.float32, layout, torch.device("cpu"))

    def make(provider):
        return cpu_provider_fn(provider, mode, lambda: error(provider) or bench.build(provider, mode, x, dy, layout),
                               graph, x, dy.shape)

    return run_cpu_case(benchmark, bench.op, case_of(mode, shape, "fp32", layout), providers, make,
                        lambda provider, out: bench.check(provider, mode, x, dy, out),
                        lambda provider: bench.row_fields(provider, mode, x, dy, layout), ours=bench.ours,
                        copy_bytes=max(x.nbytes, COPY_PROBE_MIN_BYTES))
