"""LRN's power base^(-beta): beta == 0.75 exactly (in fp32, as the kernels receive it: the AlexNet, Caffe and
torch default) is computed from square roots, 1 / (sqrt(b) * sqrt(sqrt(b))); every other beta from
exp2(-beta * log2(b)) (csrc/lrn_math.h for the C++ CPU and CUDA kernels, lrn_power in
alexnet_kernels/triton_kernels/lrn.py for Triton). Checked against float64 at many beta -- 0.75, its fp32
neighbours, a value that rounds to 0.75f, and others -- forward and backward, over bases spanning decades.
The CUDA kernels' device code runs the same checks under the host emulator (test_cuda_emulation.py)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels.lrn as lrn

from common import device_backend_params, make_input, rel_err, require

# 0.7499999 and 0.75000006 differ from 0.75 in fp32 (the general path); 0.75000001 rounds to 0.75f.
BETAS = [0.75, 0.7499999, 0.75000001, 0.75000006, 0.5, 1.0, 2.0, 0.25, 1.5, 3.0]
KERNEL_BACKENDS = [p for p in device_backend_params() if p.values[1] != "torch"]


def wide_input(shape, layout, seed):
    """Values whose magnitudes span 10^-3 .. 10^3 (never zero), so that k + alpha/n * sum x^2 spans decades."""
    g = torch.Generator().manual_seed(seed)
    mag = torch.pow(10.0, torch.empty(shape, dtype=torch.float64).uniform_(-3, 3, generator=g))
    sign = torch.where(torch.rand(shape, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
    x = (mag * sign).float()
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x


def max_elementwise_rel(a, ref):
    a, ref = a.detach().double(), ref.detach().double()
    return ((a - ref).abs() / ref.abs()).max().item()


@pytest.mark.parametrize("device,backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("size", [5, 30], ids=["n5", "n30"])  # n30: the CPU's planes / block-sum strategy
def test_power_at_many_betas_matches_float64(device, backend, beta, layout, size):
    require(backend, device)
    shape = (2, 32, 5, 7)
    x = wide_input(shape, layout, seed=int(beta * 1e8) + size).to(device)
    dy = make_input(shape, device=device, layout=layout, scale=1.0, seed=7)
    alpha, k = 1.0, 1e-2
    xr = x.clone().requires_grad_(True)
    y = lrn.local_response_norm(xr, size, alpha, beta, k, backend=backend)
    (dx,) = torch.autograd.grad(y, xr, dy)
    x64 = x.double().requires_grad_(True)
    y64 = F.local_response_norm(x64, size, alpha, beta, k)
    (dx64,) = torch.autograd.grad(y64, x64, dy.double())
    # y = x * base^(-beta): every element within 1e-5 (the power's own error), not only the norm.
    assert max_elementwise_rel(y, y64) <= 1e-5
    assert rel_err(dx, dx64) <= 1e-5


@pytest.mark.parametrize("device,backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("beta", [0.75, 0.75000001], ids=["0.75", "0.75000001"])
def test_beta_three_quarters_takes_the_square_root_path(device, backend, beta):
    """With n = 1, alpha = 1, k = 1 and small dyadic x, base = 1 + x^2 is exact in fp32, so the square-root
    path's result is known bit for bit: x * (1 / (sqrt(b) * sqrt(sqrt(b)))) with IEEE fp32 operations."""
    require(backend, device)
    g = torch.Generator().manual_seed(3)
    x = (torch.randint(-512, 513, (2, 3, 16, 16), generator=g).float() / 64).to(device)  # x^2 + 1 exact
    y = lrn.local_response_norm(x, 1, 1.0, beta, 1.0, backend=backend)
    # numpy's fp32 operations are single IEEE operations (torch's `1.0 / t` is not always correctly rounded).
    xn = x.cpu().numpy()
    base = np.float32(1.0) + xn * xn
    root = np.sqrt(base)
    expected = xn * (np.float32(1.0) / (root * np.sqrt(root)))
    assert expected.dtype == np.float32
    assert torch.equal(y.cpu(), torch.from_numpy(expected))
