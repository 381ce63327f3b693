"""The CUDA kernels' device code, run on the CPU: csrc/emulate/lrn_cuda_emulator.cpp (LRN) and
csrc/emulate/pool_cuda_emulator.cpp (max-pool and the fused block).

LRN:

Each CUDA block runs as real threads with __syncthreads as a barrier, on NaN-filled shared memory, with the
kernels' own launch planning; it checks forward and backward against a float64 reference for fp32/fp16/bf16,
both layouts, misaligned pointers, n = 1..66 (tiled and fallback kernels). This is how CI, which has no GPU,
covers the CUDA path's indexing, halos and barriers; the GPU suite in test_lrn.py runs the real thing."""
import os
import re
import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F
from torch.utils import cpp_extension

from alexnet_kernels.ops import pool as pool_ops

from common import build_test_extension, rel_err

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "csrc", "emulate", "lrn_cuda_emulator.cpp")


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs a C++20 compiler (g++)")
def test_cuda_kernels_under_the_host_emulator(tmp_path):
    if not os.path.isfile(SOURCE):
        pytest.skip("csrc/ is not in this tree (installed package without sources)")
    exe = str(tmp_path / "lrn_emu")
    build = subprocess.run(
        [os.environ.get("CXX", "g++"), "-std=c++20", "-O2", "-I" + os.path.join(ROOT, "csrc"),
         "-I" + cpp_extension.include_paths()[0], SOURCE, "-o", exe, "-lpthread"],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([exe, "quick"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    worst = dict((m.group(1), (float(m.group(2)), float(m.group(3)))) for m in re.finditer(
        r"worst (\w+): fwd ([\d.e+-]+) bwd ([\d.e+-]+)", run.stdout))
    assert set(worst) == {"float32", "float16", "bfloat16"}, run.stdout[-2000:]
    assert max(worst["float32"]) <= 1e-5
    assert max(worst["float16"]) <= 2e-3 and max(worst["bfloat16"]) <= 1.6e-2
    # base^(-beta) alone: beta = 0.75 from square roots (a few ulp over every positive float), other beta
    # from exp2/log2 (the bases the kernels see); float64 pow is the oracle.
    power = re.search(r"worst power: three_quarters ([\d.e+-]+) general ([\d.e+-]+) specials (\w+)", run.stdout)
    assert power is not None, run.stdout[-2000:]
    assert float(power.group(1)) <= 1e-6 and float(power.group(2)) <= 1e-5 and power.group(3) == "ok"


POOL_SOURCE = os.path.join(ROOT, "csrc", "emulate", "pool_cuda_emulator.cpp")


@pytest.fixture(scope="module")
def pool_emulator(tmp_path_factory):
    """csrc/emulate/pool_cuda_emulator.cpp built as a torch extension (the CUDA kernels' element functions)."""
    return build_test_extension("ak_pool_cuda_emulator", [POOL_SOURCE], tmp_path_factory, ["-O1"],
                                os.path.join(ROOT, "csrc"))


# (shape, (kH, kW, sH, sW, pH, pW), ceil_mode)
POOL_CASES = [((2, 7, 13, 11), (3, 3, 2, 2, 0, 0), False), ((3, 5, 12, 9), (3, 3, 2, 2, 1, 1), True),
              ((1, 4, 9, 10), (5, 3, 2, 1, 1, 1), True), ((2, 3, 8, 8), (2, 2, 2, 2, 0, 0), False),
              ((1, 3, 2, 2), (3, 3, 2, 2, 0, 0), True),     # ceil mode: 1x1 output where floor mode has none
              ((2, 2, 3, 5), (4, 2, 3, 3, 1, 1), True)]     # last windows hang off the bottom / right edge


@pytest.mark.parametrize("index_path", [0, 64], ids=["index32", "index64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_pool_cuda_kernels_under_the_host_emulator(pool_emulator, dtype, channels_last, index_path):
    """The CUDA max-pool and fused kernels' device code equals torch: max-pool exactly (values, offsets,
    gradients summed in fp32 then rounded, as torch's CUDA kernels do), the fused block within rounding.
    Both index paths: 32-bit (what these small tensors take) and 64-bit (what tensors of 2^31 elements or
    more take), forced."""
    pool_emulator.set_index_path(index_path)
    try:
        _check_pool_emulator(pool_emulator, dtype, channels_last)
    finally:
        pool_emulator.set_index_path(0)


def test_pool_index32_chosen_by_size(pool_emulator):
    """PoolProblem::index32 holds exactly when every input and output offset is below 2^31."""
    assert pool_emulator.index32([128, 96, 55, 55], [27, 27])
    assert pool_emulator.index32([1, 1, 46340, 46340], [23169, 23169])      # 2147395600 < 2^31
    assert not pool_emulator.index32([1, 1, 46341, 46341], [23170, 23170])  # 2147488281 >= 2^31
    assert not pool_emulator.index32([2, 1, 2**30, 1], [1, 1])


def _check_pool_emulator(pool_emulator, dtype, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for shape, g, ceil_mode in POOL_CASES:
        kernel, stride, padding = g[0:2], g[2:4], g[4:6]
        x = torch.relu(torch.randn(shape)).to(dtype).contiguous(memory_format=fmt)
        x[0, 0, 1, 1] = float("nan")
        xr = x.float().requires_grad_()
        y_ref, idx = F.max_pool2d(xr, kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True)
        dy = torch.randn(y_ref.shape).to(dtype).contiguous(memory_format=fmt)
        (dx_ref,) = torch.autograd.grad(y_ref, xr, dy.float())
        y = torch.full_like(dy, float("nan"))
        offsets = torch.full(y.shape, 255, dtype=torch.uint8).contiguous(memory_format=fmt)
        dx = torch.full_like(x, float("nan"))
        pool_emulator.max_pool2d_forward(x, y, offsets, list(g), channels_last)
        pool_emulator.max_pool2d_backward(dy, offsets, dx, list(g), channels_last)
        assert torch.equal(y.isnan(), y_ref.isnan())
        assert torch.equal(y.float().nan_to_num(0), y_ref.nan_to_num(0))
        assert torch.equal(pool_ops.indices_from_offsets(offsets, shape[3], kernel, stride, padding), idx)
        assert torch.equal(dx, dx_ref.to(dtype))

        # The fused block against the unfused chain in float64 (routing by the LRN value in `dtype`).
        x = (torch.randn(shape) * 3).to(dtype).contiguous(memory_format=fmt)
        x64 = x.double().requires_grad_()
        lrn_out = F.local_response_norm(torch.relu(x64), 5, 1e-1, 0.75, 1.0).to(dtype).double()
        z_ref = F.max_pool2d(lrn_out, kernel, stride, padding, ceil_mode=ceil_mode)
        (dx_ref,) = torch.autograd.grad(z_ref, x64, dy.double())
        z = torch.full_like(dy, float("nan"))
        dx = torch.full_like(x, float("nan"))
        pool_emulator.relu_lrn_max_pool2d_forward(x, z, offsets, 5, 1e-1, 0.75, 1.0, list(g), channels_last)
        pool_emulator.relu_lrn_max_pool2d_backward(x, dy, offsets, dx, 5, 1e-1, 0.75, 1.0, list(g), channels_last)
        tol = 1e-5 if dtype == torch.float32 else 4 * torch.finfo(dtype).eps
        assert rel_err(z, z_ref) <= tol and rel_err(dx, dx_ref) <= tol


DROPOUT_SOURCE = os.path.join(ROOT, "csrc", "emulate", "dropout_cuda_emulator.cpp")


@pytest.fixture(scope="module")
def dropout_emulator(tmp_path_factory):
    """csrc/emulate/dropout_cuda_emulator.cpp built as a torch extension (the CUDA dropout threads' code)."""
    return build_test_extension("ak_dropout_cuda_emulator", [DROPOUT_SOURCE], tmp_path_factory, ["-O1"],
                                os.path.join(ROOT, "csrc"))


def test_dropout_mask_indexing_past_2_to_the_32_under_the_emulator(dropout_emulator):
    """The device code's element -> Philox counter map equals the torch reference for group indices whose high
    word is in use (tensors past 2**34 elements), for any seed bit pattern."""
    from alexnet_kernels.ops import dropout as dropout_ops
    for seed in (0, -1, 2**63 - 1, -2**63, 123456789012345):
        s = seed & 0xFFFFFFFFFFFFFFFF
        for group in (0, 5, 2**32 - 1, 2**32, 2**32 + 3, 2**61 + 12345):
            g = torch.tensor([group], dtype=torch.int64)
            zero = torch.zeros_like(g)
            ref = dropout_ops.philox4x32_10_torch(g & 0xFFFFFFFF, g >> 32, zero, zero, s & 0xFFFFFFFF, s >> 32)
            assert dropout_emulator.group_randoms(group, seed) == [int(r) for r in ref]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_dropout_cuda_kernels_under_the_host_emulator(dropout_emulator, dtype):
    """The CUDA dropout and bias+ReLU+dropout threads' code equals the torch reference of the mask, values and
    gradients bit for bit (dbias within the fp32 summation order)."""
    from alexnet_kernels.ops import dropout as dropout_ops
    seed = torch.tensor([987654321987], dtype=torch.int64)
    threshold, scale = dropout_ops.threshold_and_scale(0.5)
    for numel in (1, 4, 1023, 4099):
        x = torch.randn(numel).to(dtype)
        y = torch.full_like(x, float("nan"))
        dropout_emulator.apply_dropout(x, y, int(seed), threshold, scale)
        assert torch.equal(y, dropout_ops._apply_mask(x, seed, 0.5, "torch"))
    for M, N in ((37, 24), (5, 1030), (3, 17)):
        x, b, dy = torch.randn(M, N).to(dtype), torch.randn(N).to(dtype), torch.randn(M, N).to(dtype)
        y = torch.full_like(x, float("nan"))
        dropout_emulator.bias_relu_dropout_forward(x, b, y, int(seed), threshold, scale)
        assert torch.equal(y, dropout_ops._bias_relu_forward(x, b, seed, 0.5, "torch"))
        dx, dbias = torch.full_like(x, float("nan")), torch.full_like(b, float("nan"))
        dropout_emulator.bias_relu_dropout_backward(dy, y, dx, dbias, int(seed), threshold, scale)
        dx_ref, dbias_ref = dropout_ops._bias_relu_backward(dy, y, seed, 0.5, "torch")
        assert torch.equal(dx, dx_ref)
        torch.testing.assert_close(dbias.float(), dbias_ref.float(), rtol=1e-5 if dtype == torch.float32 else 1e-2,
                                   atol=1e-4 if dtype == torch.float32 else 5e-2)


@pytest.mark.parametrize("M, N", [(1, 5), (511, 9), (512, 16), (513, 3), (1500, 20), (2049, 7)])
def test_dropout_dbias_chunks_give_the_cpu_kernels_bits_under_the_emulator(dropout_emulator, M, N):
    """dbias of a matrix taller than one 512-row chunk: the emulated CUDA grid (column blocks x chunks, then the
    chunk-order sum) and the C++ CPU kernel follow dropout_math.h's order, so fp32 dbias is equal bit for bit;
    both are within fp32 rounding of a float64 sum."""
    from alexnet_kernels import _extension
    from alexnet_kernels.ops import dropout as dropout_ops
    ext = _extension.load()
    if ext is None:
        pytest.skip("alexnet_kernels._C is not built: %s" % _extension.load_error())
    seed = torch.tensor([1234567], dtype=torch.int64)
    threshold, scale = dropout_ops.threshold_and_scale(0.3)
    x, b, dy = torch.randn(M, N), torch.randn(N), torch.randn(M, N)
    y = torch.empty_like(x)
    ext.bias_relu_dropout_forward(x, b, y, seed, threshold, scale)
    dx_cpu, db_cpu = torch.full_like(x, float("nan")), torch.full_like(b, float("nan"))
    ext.bias_relu_dropout_backward(dy, y, dx_cpu, db_cpu, seed, threshold, scale)
    dx_emu, db_emu = torch.full_like(x, float("nan")), torch.full_like(b, float("nan"))
    dropout_emulator.bias_relu_dropout_backward(dy, y, dx_emu, db_emu, int(seed), threshold, scale)
    assert torch.equal(dx_cpu, dx_emu)
    assert torch.equal(db_cpu, db_emu), (db_cpu - db_emu).abs().max()
    db_ref = dx_cpu.double().sum(0)
    torch.testing.assert_close(db_cpu.double(), db_ref, rtol=1e-5, atol=1e-5 * max(1.0, M ** 0.5))
