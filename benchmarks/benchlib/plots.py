"""Pictures: the roofline at a glance (one PNG per op; needs matplotlib).
"""
import os
from pathlib import Path

from .collect import COLLECTOR
from .ceilings import CPU_COPY_BYTES, CPU_MATMUL_N, cpu_ceilings
from .tables import DEVICE_TITLES, THROUGHPUT, _providers_of, devices_of


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
