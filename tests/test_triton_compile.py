"""Every Triton kernel compiles for sm_80 (A100) and sm_90 (H100), without a GPU.

CI runs the kernels under TRITON_INTERPRET=1, which never lowers them: layout errors, tl.dot shape rules,
unsupported ops, non-constexpr globals and shared-memory overflow only show up when a GPU compiles them.
Here triton.compile builds each kernel ahead of time for both targets (ptxas ships with triton) with the
arguments the real launchers pass for AlexNet's shapes, in fp32, fp16 and bf16 (tests/triton_aot.py, run in
one subprocess with TRITON_INTERPRET unset).

Default: one autotune config (the first) per (kernel, AlexNet case, dtype, target); about a minute on two
cores.  ALEXNET_KERNELS_AOT_ALL=1: every autotune config, every conv layer, NCHW and channels_last, fp32 with
TF32 off as well; prints a table (shared memory, tensor-core instructions, registers, spills).

Checks: compiles -- with AlexNet's arguments and with every size argument that can be 1 equal to 1 (the
"ones" cases: the JIT turns such an int into a compile-time constant, and dropout's threshold == 1 once broke
the compile); shared memory within the target's limit for at least one config (configs over it are
printed: the autotuner skips them on the GPU); the conv GEMMs use tensor cores (wgmma on sm_90 for the
first config in fp16/bf16); every *_kernel of the four modules was compiled by some case; the pool kernels'
comparisons and gradient sums do not flush subnormals to zero (bit-exact max-pool).
"""
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import triton_aot as aot

# With a GPU the kernels are compiled (and run) by the GPU tests themselves; this check stands in for them
# on machines without one, and the AOT API it uses differs between triton releases.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="a GPU is present: the GPU tests compile and run these kernels")

ALL = os.environ.get("ALEXNET_KERNELS_AOT_ALL", "") not in ("", "0")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEMMS = ("conv2d_relu_forward_kernel", "conv2d_relu_dgrad_kernel", "conv2d_relu_wgrad_kernel")


@pytest.fixture(scope="module")
def aot_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triton_aot")
    out = tmp / "results.json"
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # the interpreter's @triton.jit objects cannot be compiled
    env.pop("ALEXNET_KERNELS_AUTOTUNE", None)  # every autotune config exists for the ALL sweep
    env["TRITON_CACHE_DIR"] = str(tmp / "cache")  # cold, and no sm_80/sm_90 binaries left in ~/.triton
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    cmd = [sys.executable, os.path.join(ROOT, "tests", "triton_aot.py"), str(out)] + (["--all"] if ALL else [])
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=7200 if ALL else 900)
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    data = json.loads(out.read_text())
    if "skip" in data:
        pytest.skip(data["skip"])
    return data


def _select(data, dtype, target):
    return [r for r in data["results"] if r["dtype"].split("-")[0] == dtype and r["target"] == target]


def _name(r):
    cfg = f" [{r['config']}]" if r["config"] else ""
    return f"{r['kernel']} {'+'.join(r['cases'])} {r['dtype']} {r['target']}{cfg}"


def _group(r):
    # One autotuned launch: the same kernel, case, dtype and target, every config.
    return (r["kernel"], r["case"], r["dtype"], r["target"], r["constants"])


@pytest.mark.parametrize("target", list(aot.TARGETS))
@pytest.mark.parametrize("dtype", aot.DTYPES)
def test_kernels_compile(aot_results, dtype, target):
    results = _select(aot_results, dtype, target)
    assert results
    failed = [f"{_name(r)}:\n{r['error']}" for r in results if not r["ok"]]
    assert not failed, f"{len(failed)} of {len(results)} compiles failed:\n\n" + "\n\n".join(failed)


@pytest.mark.parametrize("target", list(aot.TARGETS))
@pytest.mark.parametrize("dtype", aot.DTYPES)
def test_shared_memory_fits(aot_results, dtype, target, capsys):
    limit = aot.TARGETS[target][1]
    groups = {}
    for r in _select(aot_results, dtype, target):
        if r["ok"]:
            groups.setdefault(_group(r), []).append(r)
    over = [r for rs in groups.values() for r in rs if r["shared"] > limit]
    if over:
        lines = [f"{_name(r)}: {r['shared']} B shared > {limit}" for r in over]
        with capsys.disabled():
            print("\n[triton AOT] configs over the shared-memory limit (skipped by the autotuner):\n  "
                  + "\n  ".join(lines))
        warnings.warn(f"{len(over)} config(s) exceed {target}'s shared memory: " + "; ".join(lines))
    none_fit = [k for k, rs in groups.items() if all(r["shared"] > limit for r in rs)]
    assert not none_fit, f"no config fits {limit} B of shared memory: {none_fit}"


@pytest.mark.parametrize("target", list(aot.TARGETS))
@pytest.mark.parametrize("dtype", aot.DTYPES)
def test_conv_gemms_use_tensor_cores(aot_results, dtype, target):
    gemms = [r for r in _select(aot_results, dtype, target)
             if r["ok"] and r["kernel"] in GEMMS and r["dtype"] != "fp32-ieee"]
    assert gemms
    # Every config: tensor cores (fp32 goes through TF32).  The first config (the one compiled by default,
    # 64+ rows per warpgroup) on sm_90 in fp16/bf16: Hopper's wgmma, not the sm_80 mma.sync.
    no_tc = [_name(r) for r in gemms if r["mma"] == "-"]
    assert not no_tc, "no mma/wgmma in the PTX of " + ", ".join(no_tc)
    if target == "sm_90" and dtype in ("fp16", "bf16"):
        firsts = {}
        for r in gemms:
            firsts.setdefault(_group(r), r)
        no_wgmma = [_name(r) for r in firsts.values() if r["mma"] != "wgmma"]
        assert not no_wgmma, "no wgmma in the PTX of " + ", ".join(no_wgmma)


POOL_KERNELS = ("max_pool2d_forward_kernel", "max_pool2d_backward_kernel", "max_pool2d_backward_recompute_kernel",
                "relu_lrn_max_pool2d_backward_kernel")


def test_pool_kernels_keep_subnormals(aot_results):
    """No flush-to-zero comparison, max or add in a pool kernel: flushed, subnormals would compare as zeros
    (the first of them taken, not torch's maximum) and subnormal gradients would be dropped.  The fused
    kernels' LRN powers go through libdevice's log2/exp2, which Triton links in their flush-to-zero form
    (ex2.approx.ftz, fma.rn.ftz inside log2): their argument is the base k + alpha/n * sum >= k > 0, and a
    power below 2**-126 would need a base^beta beyond 2**126."""
    flushing = {}
    for r in aot_results["results"]:
        if r["ok"] and r["kernel"] in POOL_KERNELS:
            ops = [op for op in r["ftz_ops"] if op.split(".")[0] in ("setp", "set", "max", "min", "add", "sub", "selp")]
            if ops:
                flushing[_name(r)] = ops
    assert not flushing, flushing


def test_every_kernel_is_compiled(aot_results):
    missing = set(aot_results["all_jit"]) - set(aot_results["kernels"])
    assert not missing, f"kernels no case of tests/triton_aot.py launches: {sorted(missing)}"


@pytest.mark.skipif(not ALL, reason="the table is printed with ALEXNET_KERNELS_AOT_ALL=1")
def test_print_table(aot_results, capsys):
    rows = sorted(aot_results["results"], key=lambda r: (r["kernel"], r["case"], r["dtype"], r["target"]))
    head = ("kernel", "cases", "dtype", "target", "config", "constexprs", "shared", "mma", "regs", "spill st/ld",
            "s")
    table = [head]
    for r in rows:
        spill = "" if r.get("spill_stores") is None else f"{r['spill_stores']}/{r['spill_loads']}"
        table.append((r["kernel"], "+".join(r["cases"]), r["dtype"], r["target"], r["config"] or "-",
                      r["constants"], str(r.get("shared", "FAIL")), r.get("mma", ""), str(r.get("regs") or ""),
                      spill, str(r["seconds"])))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    text = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)
    with capsys.disabled():
        print(f"\n[triton AOT] triton {aot_results['triton']}, {len(rows)} compiles, "
              f"{aot_results['wall_s']} s\n{text}")
