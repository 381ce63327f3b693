"""Writing the results files benchmarks/results/<op>-<device>-<date>.md/.json/.png, with the environment they were
measured in (device, driver, versions, ceilings).
"""
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

from .collect import COLLECTOR
from .timing import DO_BENCH_KWARGS
from .ceilings import MATMUL_N
from .tables import CELL_DESCRIPTIONS, SPEEDUP_DESCRIPTION, case_table, devices_of, op_summary_lines, summary_of
from .plots import plot_op
from .interleave import STALL_BOUND
from .versions import probe


RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"


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


def environment(collector=None):
    """versions.probe() and the run's date, CPU, threads, ceilings and timing methods."""
    c = collector or COLLECTOR
    env = {"date": c.started.date().isoformat(), "started": c.started.isoformat(timespec="seconds"),
           "platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "load_average": _load_average(), "commit": git_commit()}
    env.update(probe())
    if env["device"] is not None:
        env["gpu"] = env["device"]
    else:
        env["device"] = "CPU: %s" % env["cpu"]
    try:
        import pytest_benchmark
        env["pytest_benchmark"] = pytest_benchmark.__version__
    except Exception:
        env["pytest_benchmark"] = None
    for module in ("onnxruntime", "openvino", "onnx"):   # the CPU peers' versions (benchlib/peers.py)
        try:
            env[module] = __import__(module).__version__
        except Exception:
            env[module] = None
    env["copy_gbps"] = c.copy_gbps
    env["copy_ms"] = c.copy_ms
    if c.matmul_tflops is not None:
        env["matmul_tflops"] = c.matmul_tflops
        env["matmul_ms"] = c.matmul_ms
        env["matmul_probe"] = "torch.mm of two %dx%d bf16 matrices, do_bench median" % (MATMUL_N, MATMUL_N)
    env["timing"] = {"gpu": "triton.testing.do_bench(%s), L2 flushed before each timed call"
                            % ", ".join("%s=%r" % kv for kv in DO_BENCH_KWARGS.items()),
                     "cpu": "providers interleaved over rounds (order rotated), median of the round medians; a "
                            "provider whose rounds disagree beyond %g× measured again, then marked stalled"
                            % STALL_BOUND}
    return env


def git_commit(repo=RESULTS_DIR.parent.parent):
    """The commit the benchmarks ran from (git describe --always --dirty: "-dirty" when tracked files differ from
    it), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _load_average():
    """os.getloadavg() (1, 5, 15 minutes) when the run's results are written: other jobs on the machine."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


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
    lines.append("- commit: %s" % env.get("commit"))
    lines.append("- alexnet_kernels %s, extension build: %s" % (env.get("alexnet_kernels"),
                                                              env.get("alexnet_kernels_build")))
    if env.get("onnxruntime") or env.get("openvino"):
        lines.append("- CPU peers: onnxruntime %s, OpenVINO %s, onnx %s" % (env.get("onnxruntime"),
                                                                         env.get("openvino"), env.get("onnx")))
    lines.append("- run started %s; load average (1, 5, 15 min) when written: %s" % (env["started"],
                                                                                    env.get("load_average")))
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
