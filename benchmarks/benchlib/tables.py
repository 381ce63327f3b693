"""The summary: one table per op and device type (median ms, GB/s or TFLOP/s, % of the ceiling, speed-ups with their
ranges), the skipped providers, and an op's own summary lines.
"""
import math

from .collect import BEST_PEER, COLLECTOR, speedup_field
from .timing import REPEATS
from .ceilings import MATMUL_N
from .interleave import COPY_PROBE_MIN_BYTES


DEVICE_TITLES = {"cuda": "GPU", "cpu": "CPU"}
HOST_BOUND_NOTE = ("* host-bound: issuing one call takes the CPU at least as long as the measured time "
                   "(host_ms in the JSON), so the GPU idles between launches and the number measures "
                   "Python / launch overhead more than the kernels")


STALLED_CELL = ("stalled: rounds disagree %.1f× (not a result; re-measured, "
                "times in the JSON)")


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
    "median ms (range): the median, and the lowest–highest median of %d consecutive slices of the timed calls "
    "(CPU: of the interleaved rounds; 'stalled': rounds that disagree, not a result)" % REPEATS,
    "GB/s: the op's traffic model / time (TFLOP/s or img/s where the header says so); % of copy: of the measured "
    "copy bandwidth (GPU: the session's; CPU: a copy timed in the case's own rounds)",
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
    has_peer = any(BEST_PEER in r for r in rows_here)
    header = (list(fields) + ["provider", "median ms (range)", tp_header] + ([pct[1]] if has_pct else [])
              + ["speed-up vs %s" % b for b in bases] + (["vs the best peer"] if has_peer else [])
              + [h for _, h in memory])
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
            if r.get("stalled"):   # not a result: no time, throughput or ratio printed
                cells += [STALLED_CELL % r.get("round_spread", float("nan"))]
                table.append(cells + [""] * (len(header) - len(cells)))
                continue
            cells += [_fmt_ms_cell(r), tp_fmt(r[tp_field]) if tp_field in r else ""]
            if has_pct:
                cells.append("%.0f" % r[pct[0]] if pct[0] in r else "")
            for b in bases:
                cells.append("baseline" if p == b else _fmt_speedup(r, speedup_field(b)))
            if has_peer:
                cells.append("best peer" if r.get("best_peer") == p else
                             (_fmt_speedup(r, BEST_PEER) + " vs %s" % r["best_peer"]) if BEST_PEER in r else "")
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
        if device == "cpu" and c.cpu_ceilings and spec.get("cell", "gbps") == "gbps":
            case_copy = [r["copy_gbps"] for r in c.rows_of(op, device) if r.get("copy_probe_bytes")]
            lines.append("copy bandwidth: %s; the session's 256 MiB copy: %.1f GB/s" % (
                "each case's own (a copy of max(input, %d MiB) timed in its rounds): %.1f–%.1f GB/s"
                % (COPY_PROBE_MIN_BYTES // 2 ** 20, min(case_copy), max(case_copy)) if case_copy else "measured once", c.cpu_ceilings["copy_gbps"]))
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
