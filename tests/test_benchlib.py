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
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import benchlib as common  # noqa: E402
from common import child_pythonpath  # tests/common.py  # noqa: E402

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
    assert "commit" in doc["environment"] and "load_average" in doc["environment"]   # what the run was, and its load
    assert "- commit: " in md and "load average" in md
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
           "-k", "cpu and fwd-1x96x55x55", "-p", "no:cacheprovider", "--benchmark-max-time=0.01",
           "--benchmark-min-rounds=3", "--benchmark-warmup=off", "-q"]
    env = dict(os.environ, BENCH_WRITE_RESULTS="0", BENCH_PROVIDERS="torch-cpu",
               PYTHONPATH=child_pythonpath())
    plain = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "alexnet_kernels benchmark summary" in plain.stdout and "speed-up vs torch-cpu" in plain.stdout
    assert "Name (time in" not in plain.stdout, plain.stdout
    tables = subprocess.run(cmd + ["--benchmark-tables"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=600)
    assert tables.returncode == 0, tables.stdout + tables.stderr
    assert "Name (time in" in tables.stdout and "alexnet_kernels benchmark summary" in tables.stdout


# --- the CPU peers (benchlib/peers.py) and the interleaved timing with its stall rule (benchlib/interleave.py) ---

def _runtime(name):
    err = common.peer_error(name)
    if err is not None:
        pytest.skip(err)
    return name


@pytest.fixture(params=common.ONNX_PEERS)
def runtime(request):
    return _runtime(request.param)


def test_peer_errors_name_the_missing_package_and_the_missing_backward(monkeypatch):
    assert common.peer_error("torch-compile") is None
    assert common.peer_error("onnxruntime", "fwd+bwd") == common.INFERENCE_ONLY
    real = common.peers.importlib.import_module

    def no_openvino(name):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real(name)

    monkeypatch.setattr(common.peers.importlib, "import_module", no_openvino)
    err = common.peer_error("openvino")
    assert "openvino is not installed" in err and '.[bench]' in err


def test_the_peers_graphs_compute_torchs_ops_in_fp32(runtime):
    torch.manual_seed(0)
    shape = (2, 7, 9, 11)
    x = torch.randn(shape)
    lrn = F.local_response_norm(x, 5, 1e-4, 0.75, 2.0)
    pool = F.max_pool2d(x, 3, 2)
    cases = [(common.lrn_graph(shape, 5, 1e-4, 0.75, 2.0), lrn),
             (common.max_pool_graph(shape, 3, 2, 0), pool),
             (common.relu_lrn_max_pool_graph(shape, 5, 1e-4, 0.75, 2.0, 3, 2, 0),
              F.max_pool2d(F.local_response_norm(torch.relu(x), 5, 1e-4, 0.75, 2.0), 3, 2))]
    w, b = torch.randn(6, 7, 3, 3), torch.randn(6)
    cases.append((common.conv_relu_graph(shape, w, b, 2, 1, 1), torch.relu(F.conv2d(x, w, b, 2, 1))))
    xg, wg = torch.randn(2, 4, 8, 8), torch.randn(6, 2, 3, 3)   # groups 2, as AlexNet's conv2
    for model, want in cases:
        fn = common.onnx_peer_fn(runtime, model, x, want.shape)
        got = fn()
        assert got.shape == want.shape and got.dtype == torch.float32
        assert ((got - want).norm() / want.norm()).item() <= 1e-5, model.graph.node[0].op_type
        assert fn() is got   # the preallocated output, written again: no allocation per call
    grouped = common.onnx_peer_fn(runtime, common.conv_relu_graph(xg.shape, wg, b, 1, 1, 2), xg, (2, 6, 8, 8))()
    want = torch.relu(F.conv2d(xg, wg, b, 1, 1, 1, 2))
    assert ((grouped - want).norm() / want.norm()).item() <= 1e-5
    assert torch.equal(common.onnx_peer_fn(runtime, common.max_pool_graph(shape, 3, 2, 0), x, pool.shape)(), pool)


def test_the_graphs_refuse_an_even_lrn_window():
    pytest.importorskip("onnx")
    with pytest.raises(ValueError, match="odd sizes"):
        common.lrn_graph((1, 8, 3, 3), 4, 1e-4, 0.75, 2.0)


def test_interleaved_rounds_rotate_the_order_and_take_each_rounds_median():
    order, now = [], [0.0]
    cost_s = {"a": [0.002, 0.004], "b": [0.003], "c": [0.001]}   # "a" alternates 2 and 4 ms: its median is 3

    def call(name):
        order.append(name)
        now[0] += cost_s[name][sum(n == name for n in order) % len(cost_s[name])]

    fns = {name: (lambda name=name: call(name)) for name in "abc"}
    rounds = common.interleaved_round_ms(fns, rounds=3, calls={"a": 2}, clock=lambda: now[0])
    assert order == ["a", "a", "b", "c", "b", "c", "a", "a", "c", "a", "a", "b"]
    assert rounds == {"a": [pytest.approx(3.0)] * 3, "b": [pytest.approx(3.0)] * 3, "c": [pytest.approx(1.0)] * 3}
    assert common.calls_per_round(0.1, target_ms=25.0, max_calls=1000) == 250
    assert common.calls_per_round(0.001, target_ms=25.0, max_calls=64) == 64
    assert common.calls_per_round(1000.0) == 1


def test_a_stall_is_measured_again_and_never_becomes_a_ratio():
    attempts = []

    def measure(fns, rounds, calls):   # attempt 1: "torch-cpu" stalls in one round; attempt 2: steady
        attempts.append(1)
        stall = 40.0 if len(attempts) == 1 else 10.5
        return {"ours-cpu": [1.0, 1.1, 0.9], "torch-cpu": [10.0, stall, 10.2]}

    fns = {"ours-cpu": lambda: None, "torch-cpu": lambda: None}
    got = common.measure_interleaved(fns, rounds=3, calls={}, measure=measure)
    assert len(attempts) == 2 and not got["torch-cpu"]["stalled"] and got["torch-cpu"]["ms"] == 10.2
    assert got["ours-cpu"]["attempts"] == 2 and got["ours-cpu"]["spread"] == pytest.approx(1.1 / 0.9)
    # From TRIM_FROM rounds on, one outlier each way does not make a stall (it cannot move the median); two do.
    assert common.spread([1.0, 1.1, 50.0, 1.0, 0.01]) == pytest.approx(1.1)
    assert common.stalled({"a": [1.0, 1.1, 50.0, 40.0, 1.0]}) == ["a"]

    always = common.measure_interleaved(fns, rounds=3, calls={}, retries=2,
                                        measure=lambda f, rounds, calls: {"ours-cpu": [1.0, 1.0, 1.0],
                                                                          "torch-cpu": [10.0, 90.0, 10.0]})
    assert always["torch-cpu"]["stalled"] and always["torch-cpu"]["attempts"] == 3
    assert not always["ours-cpu"]["stalled"]

    c = common.Collector()
    new_op(c)
    case = {"mode": "fwd", "shape": "8x8"}
    for name, m in always.items():
        common.record(None, "toy", "cpu", case, name, m["ms"], 1000, 2, collector=c, ms_repeats=m["ms_repeats"],
                      stalled=m["stalled"], round_spread=m["spread"])
    rows = {r["provider"]: r for r in c.records}
    assert not any(k.startswith("speedup_vs_torch_cpu") for r in rows.values() for k in r)   # stalled baseline
    header, table, _ = common.case_table("toy", "cpu", c)
    cells = {r[2]: dict(zip(header, r)) for r in table}["torch-cpu"]
    assert cells["median ms (range)"].startswith("stalled") and cells["speed-up vs torch-cpu"] == ""
    assert "10.0" not in " ".join(cells.values()) and "9.0×" in cells["median ms (range)"]


def test_ours_against_the_best_peer_and_the_cpu_copy_bandwidth():
    c = common.Collector()
    c.cpu_ceilings = {"copy_gbps": 20.0, "matmul_tflops": 1.0, "probe": "a probe"}
    common.register_op("toy", title="Toy", case_fields=("mode", "shape"),
                       providers={"cpu": ("ours-cpu", "torch-cpu", "onnxruntime", "openvino")},
                       baselines={"cpu": ("torch-cpu",)}, peers={"cpu": ("onnxruntime", "openvino")}, collector=c)
    case = {"mode": "fwd", "shape": "8x8"}
    for name, ms, repeats in (("ours-cpu", 2.0, [1.8, 2.2]), ("torch-cpu", 8.0, [8.0, 8.0]),
                              ("onnxruntime", 3.0, [2.7, 3.3]), ("openvino", 4.0, [4.0, 4.0])):
        common.record(None, "toy", "cpu", case, name, ms, 10 ** 6, 2, collector=c, ms_repeats=repeats)
    ours = {r["provider"]: r for r in c.records}["ours-cpu"]
    assert ours["best_peer"] == "onnxruntime" and ours["speedup_vs_best_peer"] == pytest.approx(1.5)
    assert ours["speedup_vs_best_peer_range"] == pytest.approx([2.7 / 2.2, 3.3 / 1.8])
    assert ours["pct_of_copy"] == pytest.approx(100 * 2e6 / 2e-3 / 1e9 / 20.0)
    header, table, _ = common.case_table("toy", "cpu", c)
    by = {r[2]: dict(zip(header, r)) for r in table}
    assert by["ours-cpu"]["vs the best peer"].startswith("1.50× (")
    assert by["ours-cpu"]["vs the best peer"].endswith(" vs onnxruntime")
    assert by["onnxruntime"]["vs the best peer"] == "best peer" and by["ours-cpu"]["% of copy"] == "5"
    text = "\n".join(common.op_summary_lines("toy", c))
    assert "copy bandwidth: measured once; the session's 256 MiB copy: 20.0 GB/s" in text


def test_a_cpu_case_checks_every_provider_and_skips_the_broken_ones_with_the_reason():
    c = common.Collector()
    c.cpu_ceilings = {"copy_gbps": 20.0, "matmul_tflops": 1.0, "probe": "a probe"}
    new_op(c)
    case = {"mode": "fwd", "shape": "8x8"}
    right = torch.ones(4)

    def make(provider):
        if provider == "torch-cpu":
            return "not installed here"
        if provider == "ours-cpu-separate":
            return lambda: right * 2   # wrong
        return lambda: right.clone()

    check = lambda provider, out: None if torch.equal(out, right) else "differs"   # noqa: E731
    rows = common.run_cpu_case(Stub(), "toy", case, ("ours-cpu", "ours-cpu-separate", "torch-cpu"), make, check,
                               lambda provider: dict(tensor_bytes=16, tensors=2), ours=("ours-cpu",), rounds=3,
                               collector=c, copy_bytes=4096)
    assert list(rows) == ["ours-cpu"] and rows["ours-cpu"]["rounds"] == 3 and rows["ours-cpu"]["first_call_s"] >= 0
    row = rows["ours-cpu"]
    assert row["copy_probe_bytes"] == 4096 and len(row["copy_probe_ms_range"]) == 2   # the case's own copy
    if not row["copy_probe_stalled"]:
        assert row["copy_gbps"] != 20.0 and row["pct_of_copy"] == pytest.approx(100 * row["gbps"] / row["copy_gbps"])
        assert "each case's own" in "\n".join(common.op_summary_lines("toy", c))
    reasons = {s["provider"]: s["reason"] for s in c.skips}
    assert reasons == {"ours-cpu-separate": "wrong result, not timed: differs", "torch-cpu": "not installed here"}
    with pytest.raises(pytest.fail.Exception, match="differs"):
        common.run_cpu_case(Stub(), "toy", case, ("ours-cpu",), lambda p: (lambda: right * 3), check,
                            lambda provider: {}, ours=("ours-cpu",), rounds=1, collector=c)
