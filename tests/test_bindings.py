"""How csrc/bindings.cpp registers the compiled operators (issue 24).

- the dispatcher routes devices: each operator's CPU implementation is registered under the CPU dispatch key and
  its CUDA implementation under CUDA (none in a build without the CUDA sources), both behind the operator's one
  argument check; a CUDA-only operator given cpu tensors names the device in its message;
- kernel variants are chosen by rule: no compiled source reads the environment (the CUDA LRN backward's v1 window
  sums, which benchmarks compare with the default, have their own internal operator, lrn_backward_v1).
"""
import os
import re

import pytest
import torch

from alexnet_kernels import _extension

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")

needs_extension = pytest.mark.skipif(_extension.load() is None,
                                     reason="alexnet_kernels._C is not built: %s" % _extension.load_error())

CPU_AND_CUDA_OPS = ("lrn_forward", "lrn_backward", "max_pool2d_forward", "max_pool2d_backward",
                    "relu_lrn_max_pool2d_forward", "relu_lrn_max_pool2d_backward", "dropout_forward",
                    "dropout_backward", "bias_relu_dropout_forward", "bias_relu_dropout_backward")
CUDA_ONLY_OPS = ("lrn_backward_v1", "conv2d_relu_forward_cuda", "conv2d_relu_dgrad_cuda", "conv2d_relu_wgrad_cuda",
                 "conv2d_relu_wgrad_partials_cuda")


def has_kernel(name, key):
    return torch._C._dispatch_has_kernel_for_dispatch_key("%s::%s" % (_extension.OPS_NAMESPACE, name), key)


@needs_extension
def test_each_device_has_its_own_dispatch_key():
    with_cuda = _extension.build_info()["with_cuda"]
    for name in CPU_AND_CUDA_OPS:
        assert has_kernel(name, "CPU"), name
        assert has_kernel(name, "CUDA") == with_cuda, name
    for name in CUDA_ONLY_OPS:
        assert has_kernel(name, "CUDA") == with_cuda, name
    # The conv operators' CPU key runs their check, which rejects cpu tensors by name; the internal LRN
    # variant has none (torch's dispatcher error).
    assert not has_kernel("lrn_backward_v1", "CPU")
    x = torch.randn(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="conv2d_relu_forward_cuda: x must be a cuda tensor, got cpu"):
        _extension.load().conv2d_relu_forward_cuda(x, w, None, torch.empty(1, 4, 6, 6), 1, 1, 0, 0, 1, True)
    dy = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="conv2d_relu_wgrad_partials_cuda: dy must be a cuda tensor, got cpu"):
        _extension.load().conv2d_relu_wgrad_partials_cuda(dy, dy, x, 3, 3, 1, 1, 0, 0, 1, True)
    with pytest.raises(NotImplementedError, match="lrn_backward_v1.*'CPU' backend"):
        x = torch.randn(2, 5, 7)
        _extension.load().lrn_backward_v1(x, x, torch.empty_like(x), 5, 1e-4, 0.75, 2.0, False)


@needs_extension
def test_cpu_and_cuda_share_one_check():
    """A bad argument gets the same message whichever device's kernel the dispatcher picks: the check is one
    function (on a CPU-only machine this shows the CPU side; the GPU run of this test the CUDA side)."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and _extension.build_info()["with_cuda"] else [])
    for device in devices:
        x = torch.randn(2, 5, 7, device=device)
        with pytest.raises(RuntimeError, match=r"^lrn_forward: size must be >= 1, got 0$"):
            _extension.load().lrn_forward(x, torch.empty_like(x), 0, 1e-4, 0.75, 2.0, False)
        with pytest.raises(RuntimeError, match=r"^lrn_backward: dx must have x's shape \[2, 5, 7\], got \[2, 5, 6\]$"):
            _extension.load().lrn_backward(x, x, torch.empty(2, 5, 6, device=device), 5, 1e-4, 0.75, 2.0, False)


@needs_extension
def test_bias_relu_dropout_checks_name_each_argument():
    """bias_relu_dropout_*'s check runs over a table of its arguments (the lead input first): each message names
    the argument and the one it is checked against, and a written argument may overlap none before it."""
    ext = _extension.load()
    seed = torch.tensor([7])
    x, b, y = torch.randn(4, 6), torch.randn(6), torch.empty(4, 6)
    forward = [((x, b.half(), y), r"bias must have x's dtype Float, got Half"),
               ((x, torch.randn(7), y), r"bias must have shape \(N,\) = \(6,\) for x of shape \[4, 6\], got \[7\]"),
               ((x, b, torch.empty(5, 6)), r"y must have x's shape \[4, 6\], got \[5, 6\]"),
               ((x, b, x), r"y must not overlap x \(same memory\)")]
    for args, message in forward:
        with pytest.raises(RuntimeError, match="^bias_relu_dropout_forward: " + message + "$"):
            ext.bias_relu_dropout_forward(*args, seed, 100, 1.5)
    dy, y, dx, db = torch.randn(4, 6), torch.randn(4, 6), torch.empty(4, 6), torch.empty(6)
    backward = [((dy, y, dx, torch.empty(4, 6)), r"dbias must be 1-D \(N,\), got shape \[4, 6\]"),
                ((dy, y.half(), dx, db), r"y must have dy's dtype Float, got Half"),
                ((dy, y, torch.empty(4, 7), db), r"dx must have dy's shape \[4, 6\], got \[4, 7\]"),
                ((dy, y, y, db), r"dx must not overlap y \(same memory\)"),
                ((dy, y, dx, dy[0]), r"dbias must not overlap dy \(partial overlap\)"),
                ((dy, y, dx, dx[2]), r"dbias must not overlap dx \(partial overlap\)")]
    for args, message in backward:
        with pytest.raises(RuntimeError, match="^bias_relu_dropout_backward: " + message + "$"):
            ext.bias_relu_dropout_backward(*args, seed, 100, 1.5)
    ext.bias_relu_dropout_backward(dy, y, dx, db, seed, 100, 1.5)  # apart: accepted


@needs_extension
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_lrn_backward_v1_entry_point_matches_the_rule():
    """lrn_backward_v1 (every window summed from shared memory) gives lrn_backward's result (the register windows
    the rule picks for n <= 16 sum in v1's order, csrc/lrn_cuda_kernels.cuh; beyond, both run v1), every element
    written."""
    if not _extension.build_info()["with_cuda"]:
        pytest.skip("alexnet_kernels._C is built without its CUDA sources")
    ext = _extension.load()
    x = torch.randn(2, 96, 27 * 27, device="cuda")
    dy = torch.randn_like(x)
    for size in (5, 25):
        by_rule, v1 = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
        ext.lrn_backward(x, dy, by_rule, size, 1e-4, 0.75, 2.0, False)
        ext.lrn_backward_v1(x, dy, v1, size, 1e-4, 0.75, 2.0, False)
        assert not torch.isnan(v1).any() and not torch.isnan(by_rule).any(), size
        assert ((v1 - by_rule).abs().max() / by_rule.abs().max()).item() <= 1e-6, size


def test_no_compiled_source_reads_the_environment():
    """Variants are picked from shapes and arguments inside the launchers, never from environment variables."""
    readers = []
    for root, _, files in os.walk(CSRC):
        for name in files:
            if name.endswith((".cpp", ".cu", ".cuh", ".h")):
                with open(os.path.join(root, name)) as f:
                    if re.search(r"\bgetenv\b|\bsecure_getenv\b", f.read()):
                        readers.append(os.path.relpath(os.path.join(root, name), CSRC))
    assert readers == []


THP_SYSFS = "/sys/kernel/mm/transparent_hugepage/enabled"


def _vma_flags(address):
    """The VmFlags of this process's mapping that holds `address` (Linux /proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start, end = (int(a, 16) for a in head.split("-"))
                inside = start <= address < end
            elif inside and line.startswith("VmFlags:"):
                return line.split()[1:]
    raise AssertionError("no mapping holds %#x" % address)


@needs_extension
@pytest.mark.skipif(not os.path.exists(THP_SYSFS), reason="no transparent huge pages here (Linux only)")
def test_large_cpu_outputs_ask_for_huge_pages():
    """bindings.cpp written_on_cpu(): an output of >= 4 MiB that a CPU kernel writes in full is advised
    MADV_HUGEPAGE (VmFlags 'hg') on its 2 MiB-aligned interior before the kernel runs, so a fresh output
    faults in 2 MiB at a time; the values are the same (torch's, bit for bit here)."""
    from alexnet_kernels import dropout, lrn, pool
    torch.manual_seed(0)
    x = torch.randn(2, 16, 190, 190)   # 4.6 MB: at least one whole aligned 2 MiB page inside
    calls = {
        "lrn": (lambda: lrn.local_response_norm(x, 5, 1e-4, 0.75, 2.0, backend="cpu"),
                lambda: torch.nn.functional.local_response_norm(x, 5, 1e-4, 0.75, 2.0)),
        "max_pool2d": (lambda: pool.max_pool2d(torch.randn(2, 16, 380, 380), 1, backend="cpu"), None),
        "dropout": (lambda: dropout.dropout(x, 0.5, backend="cpu"), None),
    }
    for name, (ours, reference) in calls.items():
        y = ours()
        huge = 2 << 20
        interior = (y.data_ptr() + huge - 1) // huge * huge
        assert interior + huge <= y.data_ptr() + y.nbytes, name
        assert "hg" in _vma_flags(interior), name
        if reference is not None:
            torch.testing.assert_close(y, reference(), rtol=1e-6, atol=1e-6)
