"""The benchmark suite's reporting (benchmarks/benchlib/, benchmarks/conftest.py) on CPU: the spread over
repeats, the summary table's plain columns, the pictures, and pytest-benchmark's own tables kept out of the
default output."""
import importlib.util
import json
import os
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import benchlib as common  # noqa: E402

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


class Stub:
    """The benchmark fixture as benchmarks/tools/gpu_check_cases.py's StubBenchmark has it (no stats)."""

    def __init__(self):
        self.group = None
        self.extra_info = {}

    def pedantic(self, fn, rounds=1, iterations=1, warmup_rounds=0):
        return [fn() for _ in range(rounds)][-1]

    def __call__(self, fn):
        return fn()


def new_op(c, cell="gbps"):
    common.register_op("toy", title="Toy", case_fields=("mode", "shape"),
                       providers={"cpu": ("ours-cpu", "ours-cpu-separate", "torch-cpu")},
                       baselines={"cpu": ("ours-cpu-separate", "torch-cpu")}, collector=c, cell=cell)


def test_repeat_medians_are_medians_of_consecutive_slices():
    assert common.repeat_medians([5, 1, 2, 8, 3, 3, 9, 4, 7, 6], repeats=5) == [3, 5, 3, 6.5, 6.5]
    assert common.repeat_medians([2.0, 4.0], repeats=5) == [2.0, 4.0]
    assert common.repeat_medians([], repeats=5) == []
    times = list(range(1, 101))
    meds = common.repeat_medians(times)
    assert len(meds) == common.REPEATS and meds == sorted(meds)
    assert meds[0] == statistics.median(range(1, 21)) and meds[-1] == statistics.median(range(81, 101))


def test_speedups_carry_their_range_over_repeats_and_the_table_says_so_plainly():
    c = common.Collector()
    new_op(c)
    case = {"mode": "fwd", "shape": "8x8"}
    # ours: 1.0 ms (repeats 0.9 .. 1.2); torch: 10 ms (9 .. 12); separate: one repeat only (no range).
    common.record(None, "toy", "cpu", case, "ours-cpu", 1.0, 1000, 2, collector=c, ms_repeats=[0.9, 1.0, 1.2])
    common.record(None, "toy", "cpu", case, "torch-cpu", 10.0, 1000, 2, collector=c, ms_repeats=[9.0, 12.0, 10.0])
    common.record(None, "toy", "cpu", case, "ours-cpu-separate", 2.0, 1000, 2, collector=c, ms_repeats=[2.0])
    ours = {r["provider"]: r for r in c.records}["ours-cpu"]
    assert ours["ms_range"] == [0.9, 1.2]
    assert ours["speedup_vs_torch_cpu"] == pytest.approx(10.0)
    assert ours["speedup_vs_torch_cpu_range"] == pytest.approx([9.0 / 1.2, 12.0 / 0.9])
    assert ours["speedup_vs_ours_cpu_separate"] == pytest.approx(2.0)
    assert "speedup_vs_ours_cpu_separate_range" not in ours    # the baseline had one repeat: no range claimed
    header, rows, cases = common.case_table("toy", "cpu", c)
    assert header[:5] == ["mode", "shape", "provider", "median ms (range)", "GB/s"]
    assert "speed-up vs torch-cpu" in header and "speed-up vs ours-cpu-separate" in header
    by = {r[2]: dict(zip(header, r)) for r in rows}
    assert by["ours-cpu"]["median ms (range)"] == "1.000 (0.9000–1.200)"
    assert by["ours-cpu"]["speed-up vs torch-cpu"] == "10.0× (7.50–13.3)"
    assert by["ours-cpu"]["speed-up vs ours-cpu-separate"] == "2.00×"
    assert by["torch-cpu"]["speed-up vs torch-cpu"] == "baseline"
    assert by["torch-cpu"]["speed-up vs ours-cpu-separate"] == "0.20×"
    assert rows[0][:2] == ["fwd", "8x8"] and rows[1][:2] == ["", ""]   # the case's fields on its first row only
    assert cases[0]["providers"]["ours-cpu"]["ms_range"] == [0.9, 1.2]
    text = "\n".join(common.op_summary_lines("toy", c))
    assert "vs " not in text.replace("speed-up vs ", "")   # no bare "vs X" columns
    assert max(len(line) for line in text.splitlines()) < 160


def test_a_skipped_provider_keeps_its_row_and_reason():
    c = common.Collector()
    new_op(c)
    case = {"mode": "fwd", "shape": "8x8"}
    common.record(None, "toy", "cpu", case, "torch-cpu", 10.0, 1000, 2, collector=c)
    with pytest.raises(pytest.skip.Exception):
        common.skip("toy", "cpu", case, "ours-cpu", "not built here", collector=c)
    header, rows, _ = common.case_table("toy", "cpu", c)
    cells = {r[2]: r for r in rows}["ours-cpu"]
    assert cells[3] == "skipped" and len(cells) == len(header)
    assert any("not built here" in line for line in common.op_summary_lines("toy", c))


def test_cpu_median_and_measure_gpu_leave_the_repeats_for_record(monkeypatch):
    stub = Stub()
    ms = common.cpu_median_ms(stub, lambda: sum(range(1000)), runs=10)   # no pytest-benchmark stats: own timing
    assert ms > 0 and len(stub.extra_info["ms_repeats"]) == common.REPEATS

    import triton.testing
    calls = []

    def fake_do_bench(fn, warmup=25, rep=100, grad_to_none=None, quantiles=None, return_mode="mean"):
        calls.append(return_mode)
        fn()
        return [1.0, 3.0, 2.0, 2.0, 5.0, 4.0, 2.5, 3.5, 1.5, 6.0] if return_mode == "all" else 2.75

    monkeypatch.setattr(triton.testing, "do_bench", fake_do_bench)
    monkeypatch.setattr(common, "host_ms_per_call", lambda fn, calls=10: 0.01)
    monkeypatch.setattr(common.torch.cuda, "synchronize", lambda *a, **k: None)   # gpu_pedantic's, on a CPU
    stub = Stub()
    ms, extra = common.measure_gpu(stub, lambda: None)
    assert calls == ["all"] and ms == 2.75 and extra["ms_repeats"] == [2.0, 2.0, 4.5, 3.0, 3.75]
    assert extra["host_ms"] == 0.01
    # The dry-run shim of benchmarks/tools/gpu_check_cases.py returns one number: one repeat, no range.
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, *a, **k: 1.25)
    ms, extra = common.measure_gpu(stub, lambda: None)
    assert ms == 1.25 and extra["ms_repeats"] == [1.25]


def test_a_name_set_on_the_package_is_the_one_its_modules_call(monkeypatch):
    """benchlib is a package of modules; benchmarks/tools/gpu_check_cases.py's dry run (and these tests) set
    benchlib.gpu_time_ms, .gpu_pedantic, .host_ms_per_call: measure_gpu and the ceilings must call those."""
    import triton.testing

    def no_return_mode_all(fn, **kwargs):   # a do_bench without return_mode="all": gpu_times_ms -> gpu_time_ms
        raise TypeError("return_mode")

    pedantic = []
    monkeypatch.setattr(triton.testing, "do_bench", no_return_mode_all)
    monkeypatch.setattr(common, "gpu_time_ms", lambda fn: 7.0)
    monkeypatch.setattr(common, "gpu_pedantic", lambda benchmark, fn, rounds=1: pedantic.append(fn))
    monkeypatch.setattr(common, "host_ms_per_call", lambda fn, calls=10: 0.5)
    ms, extra = common.measure_gpu(Stub(), lambda: None)
    assert ms == 7.0 and extra["host_ms"] == 0.5 and len(pedantic) == 1
    assert common.ceilings.gpu_time_ms is common.gpu_time_ms   # gpu_copy_bandwidth_gbps / gpu_matmul_tflops
    monkeypatch.undo()
    assert common.timing.gpu_time_ms is common.ceilings.gpu_time_ms is common.gpu_time_ms   # restored everywhere
    assert common.gpu_time_ms.__module__ == "benchlib.timing"


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="the pictures need matplotlib")
def test_write_results_draws_one_picture_per_op_with_its_ceiling(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(common, "CPU_COPY_BYTES", 2 ** 22)
    monkeypatch.setattr(common, "CPU_MATMUL_N", 128)
    c = common.Collector()
    new_op(c)
    for shape in ("8x8", "16x16"):
        case = {"mode": "fwd", "shape": shape}
        common.record(None, "toy", "cpu", case, "ours-cpu", 1.0, 10 ** 6, 2, collector=c, ms_repeats=[0.9, 1.1])
        common.record(None, "toy", "cpu", case, "torch-cpu", 4.0, 10 ** 6, 2, collector=c)
    paths = common.write_results(c, force=True)
    names = sorted(p.name for p in paths)
    assert [n.rsplit(".", 1)[1] for n in names] == ["json", "md", "png"]
    png = [p for p in paths if p.suffix == ".png"][0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = [p for p in paths if p.suffix == ".md"][0].read_text()
    assert "](%s)" % png.name in md and "speed-up vs torch-cpu" in md
    doc = json.loads([p for p in paths if p.suffix == ".json"][0].read_text())
    assert doc["environment"]["cpu_ceilings"]["copy_gbps"] > 0
    assert not [p for p in os.listdir(tmp_path) if "tmp" in p]
    # Unchanged rows: the picture is not redrawn; BENCH_PLOTS=0 leaves it out.
    mtime = png.stat().st_mtime_ns
    common.write_results(c, force=True)
    assert png.stat().st_mtime_ns == mtime
    monkeypatch.setenv("BENCH_PLOTS", "0")
    assert not [p for p in common.write_results(c, force=True) if p.suffix == ".png"]


def test_the_default_output_is_the_suites_table_alone(tmp_path):
    """pytest benchmarks --benchmark-only prints the project's summary and not pytest-benchmark's wide tables
    (they come with --benchmark-tables)."""
    cmd = [sys.executable, "-m", "pytest", os.path.join(ROOT, "benchmarks", "bench_lrn.py"), "--benchmark-only",
           "-k", "cpu and fwd- and torch-cpu", "-p", "no:cacheprovider", "--benchmark-max-time=0.01",
           "--benchmark-min-rounds=3", "--benchmark-warmup=off", "-q"]
    env = dict(os.environ, BENCH_WRITE_RESULTS="0", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    plain = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "alexnet_kernels benchmark summary" in plain.stdout and "speed-up vs torch-cpu" in plain.stdout
    assert "Name (time in" not in plain.stdout, plain.stdout
    tables = subprocess.run(cmd + ["--benchmark-tables"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=600)
    assert tables.returncode == 0, tables.stdout + tables.stderr
    assert "Name (time in" in tables.stdout and "alexnet_kernels benchmark summary" in tables.stdout
