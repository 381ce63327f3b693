"""The one-call GPU check's own logic (benchmarks/tools/gpu_check.py): the dry run end to end against the
device tool's return rules (<= 8 plain files in $OUT, the phase table in the output's last 12,000 characters),
the sanitizer report parser and verdicts (a fake compute-sanitizer: a refused device, a planted write that goes
unreported), the TF32 yardstick, the digest of what the wheel installs, the time budgets, and that every case
list builds with unique ids at the GPU shapes (building a list runs nothing)."""
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
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
    # "Program hit ... on CUDA API call": an API error (torch, Triton and cuDNN probe the driver and catch what
    # it returns), counted apart and never as an error of a kernel
    assert cases["conv/triton"]["errors"] == {} and parsed["api_errors"] == 1
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
    check = gpu_check.Check(tmp_path, dry_run=False, total_s=gpu_check.TOTAL_S, work=tmp_path / "work")
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


# --- issue 23: the return path, the sanitizer's verdicts, freshness, TF32 -------------------------------------

REPO = TOOLS.parents[1]


def summary_phases(text):
    """{phase: status} from the last summary block in `text`."""
    block = text[text.rindex(gpu_check.SUMMARY_BEGIN):]
    assert gpu_check.SUMMARY_END in block, "the summary block is cut off"
    found = {}
    for line in block.splitlines():
        m = re.match(r"^(%s)\s+(\S+)\s" % "|".join(gpu_check.PHASES), line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


@pytest.mark.skipif(__import__("torch").cuda.is_available(),
                    reason="the dry run is a CPU's stand-in for the GPU check; on a GPU the check itself runs")
def test_dry_run_returns_everything_through_the_device_tools_rules(tmp_path):
    """The whole dry run (every phase's code at tiny shapes on the CPU), as the device tool would run it: $OUT
    must hold at most 8 plain conforming files (gpu_check.md/.json, the summary, one archive of the rest), and
    the last 12,000 characters of the output must hold the phase table, agreeing with gpu_check.json."""
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, OUT=str(out), PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(["bash", str(TOOLS / "gpu_check.sh"), "--dry-run", "--work", str(work)], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=2400)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert gpu_check.verify_out(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(gpu_check.OUT_FILES)
    data = json.loads((out / "gpu_check.json").read_text())
    want = {name: p["status"] for name, p in data["phases"].items()}
    assert set(want) == set(gpu_check.PHASES)
    assert want["correctness"] == "PASS" and want["headline"] == "PASS", want
    assert want["memcheck"] == "SKIPPED" and want["build"] == "SKIPPED", want   # no sanitizer / no build here
    tail = output[-gpu_check.OUTPUT_TAIL_CHARS:]
    assert summary_phases(tail) == want
    assert summary_phases((out / gpu_check.TAIL_FILE).read_text()) == want
    assert "all within the device's return rules" in tail
    assert data["tree"]["package_digest"] == gpu_check.tree_identity()["package_digest"]
    with tarfile.open(out / gpu_check.ARCHIVE) as tar:
        names = set(tar.getnames())
    assert {"correctness.txt", "memcheck.txt", "headline.jsonl", "gpu_check.md"} <= names
    assert any(n.startswith("correctness/") for n in names) and any(n.startswith("headline/") for n in names)
    # the work folder kept everything; $OUT only what comes back
    assert (work / "correctness.txt").exists() and not (out / "correctness.txt").exists()


def test_the_archive_is_cut_to_fit_and_says_what_was_cut(tmp_path):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "big.log").write_bytes(os.urandom(3 * 2**20))          # incompressible
    (work / "sub" / "small.txt").write_text("kept whole\n")
    target = tmp_path / "a.tar.gz"
    size, cut = gpu_check.pack_archive(work, target, limit=2**20)
    assert size <= 2**20 and cut == ["big.log"]
    with tarfile.open(target) as tar:
        assert tar.extractfile("sub/small.txt").read() == b"kept whole\n"
        assert b"big.log" in tar.extractfile("TRUNCATED.txt").read()
        assert tar.getmember("big.log").size < 2**20
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("layout,problem", [
    ({"a.md": 1}, None),
    ({"f%d" % i: 1 for i in range(9)}, "9 files"),
    ({"a/b/c/d.txt": 1}, "deeper"),
    ({"bad name.txt": 1}, "a name with"),
    ({"big.bin": gpu_check.OUT_MAX_FILE_BYTES + 1}, "over the 16 MiB"),
])
def test_return_rules(tmp_path, layout, problem):
    for rel, size in layout.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.truncate(size)
    problems = gpu_check.verify_out(tmp_path)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


FAKE_SANITIZER = """#!/bin/sh
# a stand-in for compute-sanitizer: MODE=refused | silent | reporting
case "$*" in *"--select planted"*) planted=1;; *) planted=0;; esac
if [ "$FAKE_MODE" = refused ]; then
  echo "========= COMPUTE-SANITIZER"; echo "========= Error: Device not supported"; sleep 60; exit 1
fi
echo "@@CASES 1"; echo "@@CASE-BEGIN one"
if [ "$planted" = 1 ] && [ "$FAKE_MODE" = reporting ]; then
  echo "========= Invalid __global__ write of size 4 bytes"; echo "=========     at write_past_the_end+0x70"
fi
echo "========= Program hit cudaErrorInvalidValue (error 1) due to \\"invalid argument\\" on CUDA API call"
echo "@@CASE-END one DONE"; echo "========= ERROR SUMMARY: 0 errors"
"""


@pytest.mark.parametrize("mode,status", [("refused", "REFUSED"), ("silent", "FAIL"), ("reporting", "PASS")])
def test_sanitizer_verdicts(tmp_path, monkeypatch, mode, status):
    """A refused device is one REFUSED line within seconds; a planted out-of-bounds write that the sanitizer
    does not report makes its silence worthless (FAIL); API errors of other libraries are no errors."""
    fake = tmp_path / "compute-sanitizer"
    fake.write_text(FAKE_SANITIZER)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(gpu_check, "find_sanitizer", lambda: str(fake))
    monkeypatch.setenv("FAKE_MODE", mode)
    check = gpu_check.Check(tmp_path / "out", dry_run=False, total_s=gpu_check.TOTAL_S, work=tmp_path / "work")
    check.env["FAKE_MODE"] = mode
    t0 = gpu_check.now()
    result = gpu_check.phase_memcheck(check)
    assert gpu_check.now() - t0 < 20
    assert result["status"] == status, result
    if mode == "refused":
        assert "refused this device" in result["summary"] and not result["failures"]
    if mode == "silent":
        assert any("planted out-of-bounds write" in f for f in result["failures"])
    if mode == "reporting":
        assert "1 CUDA API errors of other libraries ignored" in result["summary"]


def test_the_sanitizer_lists_hold_the_cuda_conv_and_the_planted_write():
    import torch
    dev = torch.device("cuda")
    every = [c[0] for c in gpu_check_cases.sanitize_cases("all", dev)]
    shared = [c[0] for c in gpu_check_cases.sanitize_cases("cuda-shared", dev)]
    assert len(every) == len(set(every))
    for gname in ("rowspan-c3", "scalar-g2-cg3", "cpasync16-g2-cg8"):
        for dname in ("bf16", "fp16", "fp32", "fp32-tf32"):
            assert sum(("conv/cuda/%s/%s/" % (gname, dname)) in n for n in every) == 1
    for gname in ("tile128x128-og128", "tile128x96-og96-cg128"):
        assert sum(("conv/cuda/%s/" % gname) in n for n in shared) == 2
    conv_cuda = [n for n in every if n.startswith("conv/cuda/")]
    assert set(conv_cuda) <= set(shared) and len(conv_cuda) == 16
    # never-run kernels first: the CUDA conv opens the list, the cuDNN baseline closes it
    assert every[0].startswith("conv/cuda/") and every[-1] == "cudnn-lrn-baseline"
    assert every.index("bias_relu_dropout/cuda/chunks") < every.index("pool/cuda/NCHW/k3s2p1ceil")
    assert [c[0] for c in gpu_check_cases.sanitize_cases("planted", dev)] == [gpu_check.PLANTED_CASE]


def test_correctness_lists_put_never_run_kernels_first():
    import torch
    dev = torch.device("cuda")
    conv = [c[0] for c in gpu_check_cases.cases_of("conv-bf16", dev, dry=False)]
    assert conv[0].startswith("conv/cuda/conv1/")
    first_torch = next(i for i, n in enumerate(conv) if n.startswith("conv/torch/"))
    assert all(n.startswith("conv/torch/") or "/graph/" in n for n in conv[first_torch:])
    lrn = [c[0] for c in gpu_check_cases.cases_of("lrn", dev, dry=False)]
    assert lrn[0].startswith("lrn/cuda/") and all(n.startswith("lrn/cudnn/") for n in lrn[-24:])
    dropout = [c[0] for c in gpu_check_cases.cases_of("dropout", dev, dry=False)]
    assert dropout[0].startswith("bias_relu_dropout/cuda/65536x16/")


def test_tf32_rounding():
    import torch
    one_ulp = 2.0 ** -10            # TF32 keeps 10 mantissa bits
    x = torch.tensor([1.0, 1 + one_ulp / 2, 1 + 0.75 * one_ulp, -(1 + 0.75 * one_ulp), 1 + 0.25 * one_ulp,
                      float("inf"), 3.0e-39], dtype=torch.float64)
    t = gpu_check_cases.tf32_truncate(x)
    n = gpu_check_cases.tf32_round_nearest(x)
    assert t.tolist()[:5] == [1.0, 1.0, 1.0, -1.0, 1.0]
    assert n.tolist()[:5] == [1.0, 1 + one_ulp, 1 + one_ulp, -(1 + one_ulp), 1.0]
    assert t[5] == n[5] == float("inf")


def test_the_tf32_yardstick_passes_a_tf32_kernel_and_needs_no_library():
    """conv1's shape class (C = 3), where cuDNN may take a non-TF32 algorithm (~1e-7): a correct TF32 result
    (the conv of TF32-rounded operands, summed in fp32) passes the TF32 bound; a bf16-rounded one does not."""
    import torch
    import torch.nn.functional as F
    L = gpu_check_cases.conv_layers(True)[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(L.batch, L.cin, L.hw, L.hw, generator=g)
    w = torch.randn(L.cout, L.cin // L.groups, L.kernel, L.kernel, generator=g) / 8
    b = torch.randn(L.cout, generator=g) * 0.1
    oh = (L.hw + 2 * L.padding - L.kernel) // L.stride + 1
    dy = torch.randn(L.batch, L.cout, oh, oh, generator=g)

    def provider(rounding):
        leaves = [rounding(x.double()).float().requires_grad_(), rounding(w.double()).float().requires_grad_(),
                  b.clone().requires_grad_()]
        pre = F.conv2d(leaves[0], leaves[1], leaves[2], L.stride, L.padding, 1, L.groups)
        y = torch.relu(pre)
        grads = torch.autograd.grad(pre, leaves, rounding((dy * (y > 0)).double()).float())
        return y.detach(), grads

    y, grads = provider(gpu_check_cases.tf32_round_nearest)
    errs, exact = gpu_check_cases.conv_errors(L, x, w, b, dy, y, grads)
    bound = gpu_check_cases.tf32_yardstick(L, x, w, b, dy, y, exact)
    assert 1e-5 < max(errs.values()) and all(1e-6 < bound[k] < 1e-2 for k in ("y", "dx", "dw"))
    gpu_check_cases.judge(errs, bound, fp32=True)
    y, grads = provider(lambda t: t.to(torch.bfloat16).double())
    errs, _ = gpu_check_cases.conv_errors(L, x, w, b, dy, y, grads)
    with pytest.raises(gpu_check_cases.Fail):
        gpu_check_cases.judge(errs, bound, fp32=True)


def test_the_package_digest_covers_what_the_wheel_installs(tmp_path):
    """Every module of the Python packages is in the digest the prebuilt wheel is matched on: a Python edit
    changes it (the extension's own digest stays)."""
    import shutil
    from alexnet_kernels import _sources_digest as d
    files = d.package_files(str(REPO))
    assert {"alexnet_kernels/lrn.py", "alexnet/model.py", "csrc/bindings.cpp", "setup.py"} <= set(files)
    assert any(f.startswith("alexnet_kernels/triton_kernels/") for f in files)
    assert not any("__pycache__" in f for f in files)
    copy = tmp_path / "tree"
    for rel in files:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, copy / rel)
    before = d.package_digest(str(copy)), d.sources_digest(str(copy))
    assert before == (d.package_digest(str(REPO)), d.sources_digest(str(REPO)))
    with open(copy / "alexnet_kernels" / "lrn.py", "a") as f:
        f.write("# an edit after the wheel was built\n")
    assert d.package_digest(str(copy)) != before[0] and d.sources_digest(str(copy)) == before[1]


def test_setup_py_writes_the_manifest_into_the_build_not_the_tree(tmp_path):
    from alexnet_kernels import _sources_digest as d
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
                          cwd=str(REPO), capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, ALEXNET_KERNELS_NO_CUDA="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((tmp_path / "alexnet_kernels" / d.MANIFEST).read_text())
    assert manifest["package_digest"] == d.package_digest(str(REPO))
    assert manifest["files"] == len(d.package_files(str(REPO)))
    assert not (REPO / "alexnet_kernels" / d.MANIFEST).exists()
