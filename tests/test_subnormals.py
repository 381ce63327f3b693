"""Subnormal inputs: max-pool (and the fused block's routing) pick torch's maximum among subnormals and sum
subnormal gradients exactly, in every backend; and the CUDA kernels of alexnet_kernels._C are built without
flush-to-zero (--use_fast_math alone implies -ftz=true, under which a GPU compares subnormals as zeros and
takes the first of them).  The pool tests run on the GPU backends too where a GPU is present; the binary
check reads the built extension's SASS with the cuobjdump that ships with Triton (no GPU needed)."""
import os
import re
import subprocess

import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels.fused as fused
import alexnet_kernels.pool as pool
from alexnet_kernels import _extension
from common import device_backend_params, require

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _unit(dtype):
    """The smallest positive subnormal of dtype."""
    info = torch.finfo(dtype)
    return info.tiny * info.eps


def subnormal_input(shape, dtype, device, spacing=1, seed=0):
    """Random subnormals of both signs (multiples of `spacing` units; bf16 has only 127 of them, so there are
    ties, which both torch and the kernels break by scan order), with zeros sprinkled in: in every window the
    maximum is a subnormal (or zero) that flush-to-zero would not tell from the others."""
    g = torch.Generator().manual_seed(seed)
    numel = torch.Size(shape).numel()
    mantissa_bits = int(round(-torch.log2(torch.tensor(torch.finfo(dtype).eps)).item()))
    top = (2 ** mantissa_bits - 1) // spacing  # multiples of `spacing` units below the smallest normal
    k = torch.randint(1, top + 1, (numel,), generator=g) * spacing
    sign = torch.where(torch.rand(numel, generator=g) < 0.3, -1.0, 1.0).double()
    values = k.double() * sign * _unit(dtype)
    values[torch.rand(numel, generator=g) < 0.1] = 0.0
    x = values.view(shape).to(dtype)
    assert (x.abs() < torch.finfo(dtype).tiny).all() and (x != 0).sum() > numel // 2  # really subnormal
    return x.to(device)


def subnormal_grad(shape, dtype, device, seed=1):
    # 1..8 units: a sum of the (at most four) gradients routed to one input stays an exact subnormal.
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(1, 9, shape, generator=g).double() * _unit(dtype)).to(dtype).to(device)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_max_pool_picks_torchs_maximum_among_subnormals(device, backend, dtype):
    require(backend, device, dtype, torch_cpu_low_precision=True)
    x = subnormal_input((2, 3, 9, 9), dtype, device)
    ref_y, ref_idx = F.max_pool2d(x, 3, 2, return_indices=True)
    dy = subnormal_grad(ref_y.shape, dtype, device)
    xr = x.clone().requires_grad_()
    F.max_pool2d(xr, 3, 2).backward(dy)
    xo = x.clone().requires_grad_()
    y = pool.max_pool2d(xo, 3, 2, backend=backend)
    y.backward(dy)
    bits = torch.int32 if dtype == torch.float32 else torch.int16
    assert torch.equal(y.view(bits), ref_y.view(bits))  # the same elements, bit for bit
    assert torch.equal(xo.grad, xr.grad)
    assert (xo.grad != 0).any() and (xo.grad.abs() < torch.finfo(dtype).tiny).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("device, backend", device_backend_params())
def test_fused_block_routes_subnormal_lrn_values_like_torch(device, backend, dtype):
    """relu -> LRN -> pool on subnormal activations: r^2 underflows, so the LRN value is r * k^-beta, a
    subnormal; spaced 8 units apart, the values keep their order through either rounding, so the routing
    (hence the gradient) must be torch's exactly."""
    require(backend, device, dtype, torch_cpu_low_precision=False)
    x = subnormal_input((2, 4, 9, 9), dtype, device, spacing=8)
    size, alpha, beta, k = 5, 1e-4, 0.75, 2.0
    xr = x.clone().requires_grad_()
    # The unfused chain, LRN in fp32 rounded to x's dtype (what the fused block compares; torch has no CPU
    # bf16 LRN).
    lrn_out = F.local_response_norm(torch.relu(xr.float()), size, alpha, beta, k).to(dtype)
    ref = F.max_pool2d(lrn_out, 3, 2)
    xo = x.clone().requires_grad_()
    z = fused.relu_lrn_max_pool2d(xo, size, alpha, beta, k, 3, 2, backend=backend)
    unit = _unit(dtype)
    assert (ref != 0).any() and (ref.abs() < torch.finfo(dtype).tiny).all()
    assert torch.allclose(z.double(), ref.double(), rtol=0, atol=2 * unit)
    dz = torch.ones_like(ref)
    ref.backward(dz)
    z.backward(dz)
    # Routing: which inputs receive a gradient is exactly torch's choice of maxima.
    assert torch.equal(xo.grad != 0, xr.grad != 0)


def _cuobjdump():
    try:
        from triton import knobs
        path = knobs.nvidia.cuobjdump.path
    except Exception:  # noqa: BLE001 -- an older triton: no knobs
        return None
    return path if path and os.path.exists(path) else None


def test_cuda_kernels_are_built_without_flush_to_zero():
    ext = _extension.load()
    if ext is None or not _extension.build_info()["with_cuda"]:
        pytest.skip("alexnet_kernels._C is not built with its CUDA sources")
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (it ships with triton's NVIDIA backend)")
    out = subprocess.run([tool, "-sass", ext.__file__], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        pytest.skip("cuobjdump cannot read this binary: %s" % out.stderr.strip()[-300:])
    functions = re.split(r"^\s*Function : (\S+)", out.stdout, flags=re.M)[1:]
    kernels = dict(zip(functions[::2], functions[1::2]))
    assert any("max_pool" in name for name in kernels), "no max-pool kernel in the SASS"
    # F2I.FTZ (float to integer, which nvcc emits inside its integer-division sequence) is exempt: a
    # subnormal converts to the integer 0 with or without the flush.
    flushing = {}
    for name, sass in kernels.items():
        ops = re.findall(r"\b([A-Z][A-Z0-9]*(?:\.[A-Z0-9_]+)*\.FTZ\b)", sass)
        ops = [op for op in ops if not op.startswith("F2I.")]
        if ops:
            flushing[name] = sorted(set(ops))
    assert not flushing, "%d kernels with flush-to-zero (.FTZ) instructions, built with -ftz=true? e.g. %s" % (
        len(flushing), sorted(flushing.items())[:3])
