"""The C++ CPU kernels' per-ISA copies (csrc/cpu_isa.h): baseline x86-64, AVX2 + FMA and AVX-512, the widest the
CPU runs chosen at run time. The library always takes the widest; csrc/emulate/cpu_isa_harness.cpp (built here
with csrc/lrn_cpu.cpp and csrc/pool_cpu.cpp as a throwaway extension) runs each copy this CPU supports, so every
one is checked: LRN against float64 (forward and backward, both layouts, every strategy -- ring, rows, planes --
both power paths), max-pool against torch exactly (values, and the gradient routed to torch's argmax)."""
import os

import pytest
import torch
import torch.nn.functional as F

from common import build_test_extension, rel_err

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
HARNESS = os.path.join(CSRC, "emulate", "cpu_isa_harness.cpp")
ISAS = {"baseline": 0, "avx2": 1, "avx512": 2}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    # The flags setup.py gives the library's C++ sources.
    return build_test_extension("ak_cpu_isa_harness",
                                [HARNESS, os.path.join(CSRC, "lrn_cpu.cpp"), os.path.join(CSRC, "pool_cpu.cpp")],
                                tmp_path_factory, ["-O3", "-fno-math-errno"], CSRC)


def test_best_isa_is_the_widest_the_cpu_has(harness):
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo to compare with")
    avx512 = {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags
    avx2 = {"avx2", "fma"} <= flags
    expected = 2 if avx512 and avx2 else (1 if avx2 else 0)
    assert harness.best() == expected
    assert harness.supports(0)
    assert harness.supports(1) == avx2
    assert harness.supports(2) == (avx512 and avx2)


def test_an_isa_the_cpu_lacks_is_refused(harness):
    missing = [isa for isa in (1, 2) if not harness.supports(isa)]
    if not missing:
        pytest.skip("this CPU runs every ISA the kernels are compiled for")
    with pytest.raises(RuntimeError, match="does not run the requested instruction set"):
        harness.lrn_forward(torch.ones(1, 1, 1), torch.empty(1, 1, 1), 1, 1.0, 0.75, 1.0, False, missing[0])


CASES = [  # (N, C, S), size, channels_last: ring (NCHW), rows (channels_last), planes (wide window / few channels)
    ((2, 16, 77), 5, False), ((1, 96, 45), 5, False), ((3, 40, 9), 5, True), ((2, 24, 13), 30, False),
    ((2, 6, 31), 3, True), ((1, 7, 1), 4, False)]


@pytest.mark.parametrize("isa", list(ISAS), ids=list(ISAS))
@pytest.mark.parametrize("beta", [0.75, 0.7499999, 2.0])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[0])) + "-n%d%s" % (c[1], "-cl" * c[2]))
def test_every_isa_matches_float64(harness, isa, beta, case):
    if not harness.supports(ISAS[isa]):
        pytest.skip("this CPU does not run %s" % isa)
    (N, C, S), size, channels_last = case
    g = torch.Generator().manual_seed(N * 1000 + C * 10 + S)
    x64 = torch.randn(N, C, S, generator=g, dtype=torch.float64) * 3
    dy64 = torch.randn(N, C, S, generator=g, dtype=torch.float64)
    alpha, k = 0.5, 0.5

    def stored(t):  # (N, C, S) in the kernel's layout: NCS or NSC
        return t.transpose(1, 2).contiguous().transpose(1, 2) if channels_last else t.contiguous()

    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        x, dy = stored(x64.to(dtype)), stored(dy64.to(dtype))
        y, dx = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
        harness.lrn_forward(x, y, size, alpha, beta, k, channels_last, ISAS[isa])
        harness.lrn_backward(x, dy, dx, size, alpha, beta, k, channels_last, ISAS[isa])
        xr = x.double().requires_grad_(True)
        y_ref = F.local_response_norm(xr.unsqueeze(-1), size, alpha, beta, k).squeeze(-1)
        (dx_ref,) = torch.autograd.grad(y_ref, xr, dy.double())
        assert rel_err(y, y_ref) <= tol and rel_err(dx, dx_ref) <= tol


@pytest.mark.parametrize("isa", list(ISAS), ids=list(ISAS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape,kernel,stride,pad,channels_last", [
    ((2, 5, 13, 11), 3, 2, 0, False), ((1, 96, 27, 27), 3, 2, 0, False), ((2, 20, 9, 12), 3, 2, 1, True),
    ((1, 3, 8, 8), 2, 2, 0, True)])
def test_every_isa_max_pool_is_torchs(harness, isa, dtype, shape, kernel, stride, pad, channels_last):
    if not harness.supports(ISAS[isa]):
        pytest.skip("this CPU does not run %s" % isa)
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g, dtype=dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    xr = x.clone().requires_grad_(True)
    y_ref = F.max_pool2d(xr, kernel, stride, pad)
    dy = torch.randn(y_ref.shape, generator=g, dtype=dtype).contiguous(memory_format=fmt)
    (dx_ref,) = torch.autograd.grad(y_ref, xr, dy)
    y = torch.full_like(y_ref.detach(), float("nan")).contiguous(memory_format=fmt)
    offsets = torch.empty(y.shape, dtype=torch.uint8).contiguous(memory_format=fmt)
    dx = torch.full_like(x, float("nan"))
    harness.max_pool2d_forward(x, y, offsets, kernel, stride, pad, channels_last, ISAS[isa])
    harness.max_pool2d_backward(dy, offsets, dx, kernel, stride, pad, channels_last, ISAS[isa])
    assert torch.equal(y, y_ref.detach())
    assert torch.equal(dx, dx_ref)
