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

from .. import _backends, _extension
from ._registry import DifferentiableOp
from .lrn import NSC, empty_in_layout, reference_backward, torch_local_response_norm
from .pool import (empty_pool_outputs, in_layout, kernel_ready, offsets_from_indices, pool_layout,
                   torch_pool_backward)

# The backend policy ("auto" on cuda: not measured on a GPU yet, see benchmarks/results/README.md).  The C++
# CPU kernels also take float64 (for gradcheck).
BACKENDS = _backends.OpBackends.triton_cuda_cpu(("relu_lrn_max_pool2d_forward", "relu_lrn_max_pool2d_backward"),
                                                auto={"cuda": ("triton", "cuda"), "cpu": ("cpu",)})


def triton_fused():
    from ..triton_kernels import pool as module
    return module


def _run_forward(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
    x = kernel_ready(x, backend)
    z, offsets = empty_pool_outputs(x, kernel_size, stride, padding, ceil_mode)
    if z.numel() == 0:
        return z, offsets
    if backend == "torch":
        lrn_out = torch_local_response_norm(torch.relu(x), size, alpha, beta, k)
        ref, indices = F.max_pool2d(lrn_out, kernel_size, stride, padding, 1, ceil_mode, return_indices=True)
        z.copy_(ref)
        offsets.copy_(offsets_from_indices(indices, x.shape[3], kernel_size, stride, padding))
    elif backend == "triton":
        triton_fused().relu_lrn_max_pool2d_forward(x, z, offsets, size, alpha, beta, k, kernel_size, stride,
                                                   padding)
    else:
        _extension.load().relu_lrn_max_pool2d_forward(x, z, offsets, size, alpha, beta, k, *kernel_size,
                                                      *stride, *padding, pool_layout(x) == NSC)
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


def relu_lrn_max_pool2d_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                                kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
                                backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    backend = BACKENDS.resolve(backend, x, "relu_lrn_max_pool2d_forward")
    return _run_forward(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend)


def _forward_fake(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
    return empty_pool_outputs(x, kernel_size, stride, padding, ceil_mode)


def relu_lrn_max_pool2d_backward(dz: torch.Tensor, x: torch.Tensor, offsets: torch.Tensor, size: int,
                                 alpha: float, beta: float, k: float, kernel_size: List[int], stride: List[int],
                                 padding: List[int], ceil_mode: bool, backend: str) -> torch.Tensor:
    _backends.check_same_device("relu_lrn_max_pool2d_backward", dz=dz, x=x, offsets=offsets)
    backend = BACKENDS.resolve(backend, x, "relu_lrn_max_pool2d_backward")
    return _run_backward(dz, x, offsets, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend)


def _backward_fake(dz, x, offsets, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
    return empty_in_layout(x.shape, pool_layout(x), x)


def _save(inputs, output, _residuals):
    x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend = inputs
    # The conv output and one byte per output: nothing else.
    return (x, output[1]), (size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend)


def _grads(backward, saved, params, grad_outputs, needs_input_grad):
    x, offsets = saved
    return (backward(grad_outputs[0], x, offsets, *params),) + (None,) * 9


# relu_lrn_max_pool2d(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend) -> (z, offsets):
# the fused block on a 4-D tensor with autograd (lists of two ints; the offsets get no gradient).
relu_lrn_max_pool2d = DifferentiableOp(
    "ReLULRNMaxPool2d", relu_lrn_max_pool2d_forward, _forward_fake, relu_lrn_max_pool2d_backward, _backward_fake,
    _save, _grads, non_differentiable=(1,))


def relu_lrn_max_pool2d_inference(x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend):
    """z of the block without autograd (for when no gradient is needed): the forward op while torch.compile
    traces, else its function (no autograd.Function per call, as pool's max_pool2d_inference)."""
    args = (x, size, alpha, beta, k, kernel_size, stride, padding, ceil_mode, backend)
    if torch.compiler.is_compiling():
        return torch.ops.alexnet_kernels.relu_lrn_max_pool2d_forward(*args)[0]
    return relu_lrn_max_pool2d_forward(*args)[0]
