"""The one-call GPU check's own logic (benchmarks/tools/gpu_check.py): what CI's dry run cannot show -- the
sanitizer report parser on the report formats, the time budgets, and that every op's case list builds with
unique ids at the GPU shapes (building a list runs nothing)."""
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "benchmarks" / "tools"
sys.path.insert(0, str(TOOLS))
sys.path.insert(0, str(TOOLS.parent))

import gpu_check  # noqa: E402
import gpu_check_cases  # noqa: E402

MEMCHECK_REPORT = """\
@@CASES 5
@@CASE-BEGIN lrn/cuda/NCHW/n=5
========= COMPUTE-SANITIZER
========= Invalid __global__ read of size 4 bytes
=========     at void alexnet_kernels::lrn_forward_nchw_kernel<float>(const float *, float *, long)+0x1b0 in lrn_cuda_kernels.cuh:210
=========     by thread (3,0,0) in block (0,0,0)
=========     Address 0x7f00 is out of bounds
========= Invalid __global__ read of size 4 bytes
=========     at lrn_forward_kernel+0x2c0 in /x/triton_kernels/lrn.py:98
@@CASE-END lrn/cuda/NCHW/n=5 DONE
@@CASE-BEGIN pool/cuda/NCHW/k3s2p1ceil
=========     at something_unrelated+0x10
@@CASE-END pool/cuda/NCHW/k3s2p1ceil DONE
@@CASE-BEGIN dropout/cuda
========= Error: Race reported between Write access at 0x1f0 in bias_relu_dropout_backward_kernel
@@CASE-BEGIN conv/triton
========= Program hit cudaErrorIllegalAddress (error 700) due to "an illegal memory access" on CUDA API call
========= ERROR SUMMARY: 4 errors
"""


def test_sanitizer_reports_are_counted_per_case_and_kernel():
    parsed = gpu_check.parse_sanitizer(MEMCHECK_REPORT)
    cases = parsed["cases"]
    assert parsed["total"] == 4 and parsed["expected"] == 5
    assert cases["lrn/cuda/NCHW/n=5"] == {"status": "DONE", "errors": {"lrn_forward_nchw_kernel": 1,
                                                                          "lrn_forward_kernel": 1}}
    assert cases["pool/cuda/NCHW/k3s2p1ceil"] == {"status": "DONE", "errors": {}}   # a frame without a report
    assert cases["dropout/cuda"]["status"] == "CRASHED"         # no end marker: the case never finished
    assert cases["dropout/cuda"]["errors"] == {"(unnamed)": 1}  # a report with no 'at' frame still counts
    assert cases["conv/triton"]["errors"] == {"(unnamed)": 1}
    assert parsed["unattributed"] == {}


@pytest.mark.parametrize("frame,name", [
    ("void ns::lrn_backward_nhwc_kernel<c10::Half, 5>(const c10::Half *, float)+0x30 in f.cu:9",
     "lrn_backward_nhwc_kernel"),
    ("dropout_kernel+0x2c0 in /a/b.py:63", "dropout_kernel"),
    ("conv2d_relu_forward_kernel", "conv2d_relu_forward_kernel"),
])
def test_kernel_names_from_sanitizer_frames(frame, name):
    assert gpu_check.kernel_name(frame) == name


def test_phase_limits_carry_unused_time_and_keep_later_budgets(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(gpu_check, "now", lambda: clock[0])
    check = gpu_check.Check(tmp_path, dry_run=True, total_s=gpu_check.TOTAL_S)
    assert check.phase_limit("build") == gpu_check.BUDGETS["build"]
    clock[0] += 30   # the build took 30 s: its unused 90 s go to the correctness phase
    assert check.phase_limit("correctness") == pytest.approx(gpu_check.BUDGETS["build"] +
                                                             gpu_check.BUDGETS["correctness"] - 30)
    clock[0] += 300  # 330 s in, behind plan: a phase still gets half its budget
    assert check.phase_limit("memcheck", ("headline",)) == pytest.approx(gpu_check.BUDGETS["memcheck"] / 2)
    clock[0] += 100  # 430 s in: half of the headline's budget is kept back, the memcheck gets the floor
    assert check.phase_limit("memcheck", ("headline",)) == 5.0
    assert check.phase_limit("headline") == pytest.approx(gpu_check.TOTAL_S - 430 - gpu_check.SUMMARY_RESERVE_S)


@pytest.mark.parametrize("op", gpu_check.CORRECTNESS_OPS)
def test_correctness_case_lists_build_at_the_gpu_shapes(op):
    import torch
    cases = gpu_check_cases.cases_of(op, torch.device("cuda"), dry=False)
    ids = [c[0] for c in cases]
    assert ids and len(ids) == len(set(ids))
    assert all(callable(c[1]) for c in cases)
    if op.startswith("conv-"):   # the five AlexNet layers at batch 128, in both layouts
        assert sum("/conv3/128x256x13x13/" in i for i in ids) == 8


def test_headline_covers_every_benchmark_op():
    ops = {c[0] for c in gpu_check_cases.headline_cases(dry=False)}
    assert ops == {"lrn", "max_pool2d", "relu_lrn_max_pool2d", "dropout", "conv2d_relu", "alexnet_train_step"}


# --- the prebuilt wheel (issue 15: the GPU machine installs a wheel built on a CPU instead of compiling) --------

def test_the_wheel_check_uses_the_digest_setup_py_bakes_in():
    """gpu_check.sources_digest() is alexnet_kernels/_sources_digest.py's, over csrc/ and the build files; a
    library built from this tree carries the same value in build_info() (CI builds from the clean tree)."""
    from alexnet_kernels import _extension, _sources_digest
    root = str(TOOLS.parents[1])
    assert gpu_check.sources_digest() == _sources_digest.sources_digest(root)
    files = _sources_digest.source_files(root)
    assert "setup.py" in files and "csrc/bindings.cpp" in files and "csrc/lrn_cuda_kernels.cuh" in files
    info = _extension.build_info()
    if info is None:
        pytest.skip("alexnet_kernels._C is not built: %s" % _extension.load_error())
    assert info["sources_digest"] == gpu_check.sources_digest(), (
        "the loaded library was built from other sources than this tree: rebuild it")


def test_no_prebuilt_wheel_means_the_build_phase_compiles(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "WHEEL_DIR", tmp_path / "absent")
    ok, why = gpu_check.install_prebuilt_wheel(None, None, 10)
    assert not ok and "no prebuilt wheel" in why
