"""The fused ReLU -> LRN -> max-pool block (AlexNet's layers 1-2 after the conv) as custom ops.

    torch.ops.alexnet_kernels.relu_lrn_max_pool2d_forward(x, size, alpha, beta, k, kernel_size, stride,
                                                          padding, ceil_mode, backend) -> (z, offsets)
    torch.ops.alexnet_kernels.relu_lrn_max_pool2d_backward(dz, x, offsets, size, alpha, beta, k,
                                                           kernel_size, stride, padding, ceil_mode,
                                                           backend) -> dx

z = max_pool2d(local_response_norm(relu(x), size, alpha, beta, k), kernel_size, stride, padding, ceil_mode)
with PyTorch's math for each (see ops/lrn.py and ops/pool.py).  One forward kernel reads x and writes z
and the one-byte in-window offsets of the maxima; one backward kernel reads x, dz and the offsets and
writes dx.  Saved for backward: x (the conv output) and the offsets -- no ReLU or LRN output exists.
The maxima are chosen among the LRN values rounded to x's dtype, so routing equals the unfused chain's.
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .. import _backends, _extension
from .lrn import NSC, empty_in_layout, reference_backward, torch_local_response_norm
from .pool import (in_layout, kernel_ready, offsets_from_indices, output_hw, pool_layout,
                   torch_pool_backward)

# backend="auto" on cuda: not measured on a GPU yet (see benchmarks/results/README.md).
AUTO_CUDA_PREFERENCE = ("triton", "cuda")


# The functions of alexnet_kernels._C the "cpu" and "cuda" backends call.
EXT_FUNCTIONS = ("relu_lrn_max_pool2d_forward", "relu_lrn_max_pool2d_backward")


def resolve_backend(backend, x, op):
    return _backends.resolve_checked(backend, x, op, AUTO_CUDA_PREFERENCE, EXT_FUNCTIONS)


def triton_fused():
    from ..triton_kernels import pool as module
    return module


def _run_forward(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
    x = kernel_ready(x, backend)
    layout = pool_layout(x)
    N, C, H, W = x.shape
    shape = (N, C) + output_hw((H, W), kernel_size, stride, padding, ceil_mode)
    z = empty_in_layout(shape, layout, x)
    offsets = empty_in_layout(shape, layout, x, torch.uint8)
    if z.numel() == 0:
        return z, offsets
    if backend == "torch":
        lrn_out = torch_local_response_norm(torch.relu(x), size, alpha, beta, k)
        ref, indices = F.max_pool2d(lrn_out, kernel_size, stride, padding, 1, ceil_mode, return_indices=True)
        z.copy_(ref)
        offsets.copy_(offsets_from_indices(indices, W, kernel_size, stride, padding))
    elif backend == "triton":
        triton_fused().relu_lrn_max_pool2d_forward(x, z, offsets, size, alpha, beta, k, kernel_size, stride,
                                                   padding)
    else:
        _extension.load().relu_lrn_max_pool2d_forward(x, z, offsets, size, alpha, beta, k, *kernel_size,
                                                      *stride, *padding, layout == NSC)
    return z, offsets


def _run_backward(dz, x, offsets, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
    x = kernel_ready(x, backend)
    layout = pool_layout(x)
    if x.numel() == 0:
        return empty_in_layout(x.shape, layout, x)
    if backend == "torch":
        r = torch.relu(x)
        dlrn = torch_pool_backward(dz, offsets, x.shape, layout, kernel_size, stride, padding, ceil_mode)
        dr = reference_backward(dlrn, r, size, alpha, beta, k)
        return in_layout(torch.where(x <= 0, torch.zeros_like(dr), dr), layout)  # relu's backward
    dx = empty_in_layout(x.shape, layout, x)
    if backend == "triton":
        triton_fused().relu_lrn_max_pool2d_backward(x, dz, offsets, dx, size, alpha, beta, k, kernel_size,
                                                    stride, padding)
    else:
        _extension.load().relu_lrn_max_pool2d_backward(x, in_layout(dz, layout), in_layout(offsets, layout), dx,
                                                       size, alpha, beta, k, *kernel_size, *stride, *padding,
                                                       layout == NSC)
    return dx


@torch.library.custom_op("alexnet_kernels::relu_lrn_max_pool2d_forward", mutates_args=())
def relu_lrn_max_pool2d_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                                kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
                                backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    backend = resolve_backend(backend, x, "relu_lrn_max_pool2d_forward")
    return _run_forward(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend)


@relu_lrn_max_pool2d_forward.register_fake
def _forward_fake(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
    shape = tuple(x.shape[:2]) + output_hw(x.shape[2:], kernel_size, stride, padding, ceil_mode)
    layout = pool_layout(x)
    return empty_in_layout(shape, layout, x), empty_in_layout(shape, layout, x, torch.uint8)


@torch.library.custom_op("alexnet_kernels::relu_lrn_max_pool2d_backward", mutates_args=())
def relu_lrn_max_pool2d_backward(dz: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor, size: int,
                                 alpha: float, beta: float, k: float, kernel_size: List[int], stride: List[int],
                                 padding: List[int], ceil_mode: bool, backend: str) -> torch.Tensor:
    _backends.check_same_device("relu_lrn_max_pool2d_backward", dz=dz, x=x, offsets=offsets)
    backend = resolve_backend(backend, x, "relu_lrn_max_pool2d_backward")
    return _run_backward(dz, x, offsets, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend)


@relu_lrn_max_pool2d_backward.register_fake
def _backward_fake(dz, x, offsets, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
    return empty_in_layout(x.shape, pool_layout(x), x)


def _setup_context(ctx, inputs, output):
    x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend = inputs
    _, offsets = output
    ctx.mark_non_differentiable(offsets)
    ctx.save_for_backward(x, offsets)  # the conv output and one byte per output: nothing else
    ctx.params = (size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend)


def _backward(ctx, dz, _doffsets):
    x, offsets = ctx.saved_tensors
    dx = torch.ops.alexnet_kernels.relu_lrn_max_pool2d_backward(dz, x, offsets, *ctx.params)
    return (dx,) + (None,) * 9


torch.library.register_autograd("alexnet_kernels::relu_lrn_max_pool2d_forward", _backward,
                                setup_context=_setup_context)


class ReLULRNMaxPool2dFunction(torch.autograd.Function):
    """The eager path (same kernels and saved tensors as the custom op, no dispatcher cost)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
        backend = resolve_backend(backend, x, "relu_lrn_max_pool2d_forward")
        z, offsets = _run_forward(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend)
        ctx.save_for_backward(x, offsets)
        ctx.params = (size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend)
        ctx.mark_non_differentiable(offsets)
        return z, offsets

    @staticmethod
    @once_differentiable  # no derivative of the backward kernel: double backward raises, never zeros
    def backward(ctx, dz, _doffsets):
        x, offsets = ctx.saved_tensors
        return (_run_backward(dz, x, offsets, *ctx.params),) + (None,) * 9


def relu_lrn_max_pool2d(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
    """The fused block on a 4-D tensor with autograd: the custom op under torch.compile, else the Function."""
    if torch.compiler.is_compiling():
        return torch.ops.alexnet_kernels.relu_lrn_max_pool2d_forward(
            x, size, alpha, beta, k, list(kernel_size), list(stride), list(padding), ceil_mode, backend)[0]
    return ReLULRNMaxPool2dFunction.apply(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode,
                                          backend)[0]
