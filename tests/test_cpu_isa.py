"""The C++ CPU kernels' per-ISA copies (csrc/cpu_isa.h): baseline x86-64, AVX2 + FMA and AVX-512, the widest the
CPU runs chosen at run time. The library always takes the widest; csrc/emulate/cpu_isa_harness.cpp (built here
with csrc/lrn_cpu.cpp, csrc/pool_cpu.cpp and csrc/dropout_cpu.cpp as a throwaway extension) runs each copy this
CPU supports, so every one is checked: LRN against float64 (forward and backward, both layouts, every strategy --
ring, rows, planes -- the power at several beta), max-pool against torch exactly (values, and the gradient routed to
torch's argmax), the fused ReLU -> LRN -> max-pool block against the float64 chain (values, routing, gradient),
dropout and bias + ReLU + dropout bit for bit against the baseline copy and the reference mask."""
import os

import pytest
import torch
import torch.nn.functional as F

from alexnet_kernels.ops import dropout as dropout_ops
from alexnet_kernels.ops import pool as pool_ops
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
                                [HARNESS] + [os.path.join(CSRC, f) for f in ("lrn_cpu.cpp", "pool_cpu.cpp",
                                                                             "dropout_cpu.cpp")],
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
@pytest.mark.parametrize("beta", [0.75, 0.7499999, 0.5, 1.0, 2.0])
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
    # Empty offsets: the values-only kernels (inference) write y alone, the same values.
    y_values = torch.full_like(y, float("nan"))
    harness.max_pool2d_forward(x, y_values, torch.empty(0, 0, 0, 0, dtype=torch.uint8), kernel, stride, pad,
                               channels_last, ISAS[isa])
    assert torch.equal(y_values, y_ref.detach())


def _require(harness, isa):
    if not harness.supports(ISAS[isa]):
        pytest.skip("this CPU does not run %s" % isa)


FUSED_CASES = [  # shape, (size, alpha, beta, k), (kernel, stride, padding), channels_last
    ((2, 7, 11, 9), (5, 1e-1, 0.75, 1.0), (3, 2, 0), False),
    ((2, 20, 13, 11), (5, 1e-1, 0.75, 1.0), (3, 2, 0), True),
    ((2, 6, 12, 10), (4, 2e-2, 0.7499999, 2.0), (3, 2, 1), False),   # even window, padding, general power
    ((1, 3, 9, 8), (9, 1e-1, 0.5, 1.0), (2, 2, 0), True),            # n > C
    ((1, 24, 15, 15), (5, 1e-1, 1.5, 1.0), (3, 1, 1), False),
    ((1, 32, 27, 27), (5, 1e-1, 0.75, 2.0), (3, 2, 0), False),       # AlexNet's rows: vector bodies and tails
    ((1, 32, 27, 27), (5, 1e-1, 0.75, 2.0), (3, 2, 0), True),
]


@pytest.mark.parametrize("isa", list(ISAS), ids=list(ISAS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", FUSED_CASES,
                         ids=lambda c: "x".join(map(str, c[0])) + "-n%d-b%g%s" % (c[1][0], c[1][2], "-cl" * c[3]))
def test_every_isa_fused_block_matches_float64(harness, isa, dtype, case):
    """Forward values and routing, and the backward through the kernel's own offsets, of each ISA's copy
    against relu -> F.local_response_norm -> F.max_pool2d in float64."""
    _require(harness, isa)
    shape, (size, alpha, beta, k), (kernel, stride, pad), channels_last = case
    N, C, H, W = shape
    OH, OW = (H + 2 * pad - kernel) // stride + 1, (W + 2 * pad - kernel) // stride + 1
    g = torch.Generator().manual_seed(N * 1000 + C * 10 + H)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x64 = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    dz64 = torch.randn(N, C, OH, OW, generator=g, dtype=torch.float64)
    x, dz = x64.to(dtype).contiguous(memory_format=fmt), dz64.to(dtype).contiguous(memory_format=fmt)

    xr = x.double().requires_grad_(True)
    lrn_ref = F.local_response_norm(torch.relu(xr), size, alpha, beta, k)
    z_ref, indices = F.max_pool2d(lrn_ref, kernel, stride, pad, return_indices=True)
    (dx_ref,) = torch.autograd.grad(z_ref, xr, dz.double())

    z = torch.full((N, C, OH, OW), float("nan"), dtype=dtype).contiguous(memory_format=fmt)
    offsets = torch.full((N, C, OH, OW), 255, dtype=torch.uint8).contiguous(memory_format=fmt)
    dx = torch.full_like(x, float("nan"))
    harness.relu_lrn_max_pool2d_forward(x, z, offsets, size, alpha, beta, k, kernel, stride, pad, channels_last,
                                        ISAS[isa])
    harness.relu_lrn_max_pool2d_backward(x, dz, offsets, dx, size, alpha, beta, k, kernel, stride, pad,
                                         channels_last, ISAS[isa])
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert rel_err(z, z_ref) <= tol
    assert torch.equal(pool_ops.indices_from_offsets(offsets, W, (kernel, kernel), (stride, stride), (pad, pad)),
                       indices)
    assert rel_err(dx, dx_ref) <= tol


DROPOUT_SEEDS = [0, 123456789, -2 ** 40 + 17]


def _dropout_threshold_scale(p):
    return dropout_ops.threshold_and_scale(p)


def _bits(t):
    """t's bytes: equal bits, NaNs and signed zeros included."""
    return t.contiguous().view(-1).view(torch.uint8)


@pytest.mark.parametrize("isa", list(ISAS), ids=list(ISAS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
@pytest.mark.parametrize("numel", [1, 4099, 3 * 4096 * 4 + 7], ids=lambda n: "n%d" % n)
def test_every_isa_dropout_is_the_reference_bit_for_bit(harness, isa, dtype, numel):
    """The mask of every copy is the reference mask (keep_mask_torch), and the values are x * scale or 0 exactly:
    every copy writes the same bits."""
    _require(harness, isa)
    p = 0.5
    threshold, scale = _dropout_threshold_scale(p)
    g = torch.Generator().manual_seed(numel)
    x = torch.randn(numel, generator=g).to(dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    for seed in DROPOUT_SEEDS:
        keep = dropout_ops.keep_mask_torch(numel, torch.tensor([seed]), p, "cpu")
        expected = (x.to(acc) * (keep.to(acc) * scale)).to(dtype)
        y = torch.full_like(x, float("nan"))
        harness.apply_dropout(x, y, seed, threshold, scale, ISAS[isa])
        assert torch.equal(_bits(y), _bits(expected))


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "baseline"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=["fp32", "bf16", "fp64"])
@pytest.mark.parametrize("shape", [(33, 24), (17, 30), (700, 1030)], ids=lambda s: "x".join(map(str, s)))
def test_every_isa_bias_relu_dropout_is_the_baselines_bit_for_bit(harness, isa, dtype, shape):
    """Forward, dx and dbias of each copy are the baseline copy's bits (rows not a multiple of 4 wide, several
    column tiles, several dbias chunks), and the baseline's forward is the reference mask's."""
    _require(harness, isa)
    p = 0.5
    threshold, scale = _dropout_threshold_scale(p)
    M, N = shape
    g = torch.Generator().manual_seed(M * N)
    x = torch.randn(M, N, generator=g).to(dtype)
    bias = torch.randn(N, generator=g).to(dtype)
    dy = torch.randn(M, N, generator=g).to(dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    seed = DROPOUT_SEEDS[1]
    keep = dropout_ops.keep_mask_torch(M * N, torch.tensor([seed]), p, "cpu").view(M, N)
    results = {}
    for which in ("baseline", isa):
        y = torch.full_like(x, float("nan"))
        dx = torch.full_like(x, float("nan"))
        dbias = torch.full_like(bias, float("nan"))
        harness.bias_relu_dropout_forward(x, bias, y, seed, threshold, scale, ISAS[which])
        harness.bias_relu_dropout_backward(dy, y, dx, dbias, seed, threshold, scale, ISAS[which])
        results[which] = (y, dx, dbias)
    expected_y = (torch.relu(x.to(acc) + bias.to(acc)) * (keep.to(acc) * scale)).to(dtype)
    assert torch.equal(results["baseline"][0], expected_y)
    dbias_ref = torch.where(keep & (expected_y > 0), dy.double() * scale, 0.0).sum(0)
    assert rel_err(results["baseline"][2], dbias_ref) <= (1e-5 if dtype != torch.bfloat16 else 2 ** -7)
    for a, b in zip(results["baseline"], results[isa]):
        assert torch.equal(_bits(a), _bits(b))
