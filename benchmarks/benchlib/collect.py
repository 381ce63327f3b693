"""Result collection: the session's Collector, register_op(), skip() and record() -- which turns a measured time
and the op's traffic model (tensors x bytes, or bytes moved), FLOPs or items into GB/s, TFLOP/s or items/s, % of
the measured ceiling, and the speed-ups against each baseline of the case.
"""
import datetime
import re

import pytest


GB = 1e9


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
        baseline's slowest / the row's fastest]: how far the noise of the two measurements can move the ratio.
        A stalled row (interleave.py's stall rule) is in no ratio, as baseline or as row.  With peers declared
        for the device (register_op(peers=...)), the rows also get speedup_vs_best_peer against the fastest peer
        of the case (best_peer names it)."""
        rows = [r for r in self.rows_of(op, device, key) if not r.get("stalled")]
        by_provider = {r["provider"]: r for r in rows}
        for base in self.ops[op]["baselines"].get(device, ()):
            _set_speedup(rows, by_provider.get(base), speedup_field(base))
        peers = [by_provider[p] for p in self.ops[op].get("peers", {}).get(device, ())
                 if p in by_provider and by_provider[p]["ms"] > 0]
        if peers:
            best = min(peers, key=lambda r: r["ms"])
            _set_speedup(rows, best, BEST_PEER)
            for r in rows:
                r["best_peer"] = best["provider"]


BEST_PEER = "speedup_vs_best_peer"


def _set_speedup(rows, base, field):
    """rows' field = base ms / row ms, and field_range = [base's fastest repeat / the row's slowest, base's slowest /
    the row's fastest] when both were timed in repeats."""
    if base is None or not base["ms"] > 0:
        return
    for r in rows:
        if r["ms"] > 0:
            r[field] = base["ms"] / r["ms"]
            lo_b, hi_b = base.get("ms_range") or (None, None)
            lo_r, hi_r = r.get("ms_range") or (None, None)
            if r is not base and lo_b and lo_r:
                r[field + "_range"] = [lo_b / hi_r, hi_b / lo_r]


COLLECTOR = Collector()


def speedup_field(baseline):
    return "speedup_vs_" + re.sub(r"[^0-9a-zA-Z]+", "_", baseline).strip("_").lower()


def register_op(op, *, title, case_fields, providers, baselines, short_names=None, notes=(),
                collector=None, cell="gbps", rate_unit="items/s", summary=None, peers=None):
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
    peers: {device type: (provider names...)}: what a user would run instead of ours; every row gets a speed-up
        against the fastest of them that ran (and did not stall) in its case: the "vs best peer" column.
    """
    if cell not in ("gbps", "tflops", "rate"):
        raise ValueError("register_op(): cell must be 'gbps', 'tflops' or 'rate', got %r" % (cell,))
    c = collector or COLLECTOR
    c.ops[op] = {"title": title, "case_fields": tuple(case_fields),
                 "providers": {d: tuple(p) for d, p in providers.items()},
                 "baselines": {d: tuple(b) for d, b in baselines.items()},
                 "short_names": dict(short_names or {}), "notes": list(notes),
                 "cell": cell, "rate_unit": rate_unit, "summary": summary,
                 "peers": {d: tuple(p) for d, p in (peers or {}).items()}}


def skip(op, device, case, provider, reason, collector=None, stop=True):
    """Skip this provider for this case (pytest.skip; stop=False only notes it, for a test that times several
    providers), keeping the reason for the summary."""
    c = collector or COLLECTOR
    row = {"op": op, "device": device}
    row.update(case)
    row.update(provider=provider, reason=reason)
    c.skips.append(row)
    c.case_order.setdefault(c.case_key(op, device, row), None)
    if stop:
        pytest.skip("%s not available: %s" % (provider, reason))


def record(benchmark, op, device, case, provider, ms, tensor_bytes=None, tensors=None, min_tensors=None,
           collector=None, *, traffic_bytes=None, min_traffic_bytes=None, flops=None, items=None, copy_gbps=None,
           **extra):
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
    copy_gbps (keyword): the copy bandwidth to state % of copy against (a CPU case's own copy probe, timed in
      its rounds); default: the session's (gpu_copy_bandwidth_gbps on cuda, cpu_ceilings on the CPU).
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
    if copy_gbps is None:
        copy_gbps = c.copy_gbps if device == "cuda" else (c.cpu_ceilings or {}).get("copy_gbps")
    if copy_gbps and "gbps" in row:
        row["copy_gbps"] = copy_gbps
        row["pct_of_copy"] = 100.0 * row["gbps"] / copy_gbps
        if "gbps_min_traffic" in row:
            row["pct_of_copy_min_traffic"] = 100.0 * row["gbps_min_traffic"] / copy_gbps
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
