"""2-D max-pooling as torch.library custom ops, with fake kernels and registered autograd.

    torch.ops.alexnet_kernels.max_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, backend)
        -> (y, offsets)
    torch.ops.alexnet_kernels.max_pool2d_backward(dy, offsets, input_hw, channels_last, kernel_size,
                                                   stride, padding, ceil_mode, backend) -> dx
    torch.ops.alexnet_kernels.max_pool2d_values(x, kernel_size, stride, padding, ceil_mode, backend) -> y

max_pool2d_values is the forward of inference (no autograd: the functional API calls it when no gradient is
needed): y alone, equal to max_pool2d_forward's y.  The C++ CPU kernels then compute and store no offset;
the "triton" and "cuda" backends run their forward and drop the offsets, "torch" calls F.max_pool2d.

x is 4-D (N, C, H, W); dilation is 1.  `offsets` (uint8, y's shape and layout) holds each maximum's
in-window offset (ih - hstart) * kW + (iw - wstart), hstart = oh*sH - pH, wstart = ow*sW - pW: one byte per
output instead of torch's int64 index.  Saved for backward: the offsets only (not the input), so the
backward reads dy and the offsets and writes dx.  Values and the choice of maximum (first in scan order on
ties, last NaN with NaNs) are torch's exactly; the gradients are sums in torch's order in fp32 (fp64 for
fp64) rounded once: torch's bits for fp32/fp64, and for fp16/bf16 those of torch's CUDA kernels, not of its
CPU kernels (which round after each addition) -- see alexnet_kernels/pool.py.

Backends: "triton" (any strides), "cuda" / "cpu" (C++; NCHW- or channels_last-contiguous, other strides
copied once), "torch" (F.max_pool2d with indices converted to offsets) and "auto".
"""
from typing import List, Tuple

import torch
import torch.nn.functional as F

from .. import _backends, _extension
from ._registry import DifferentiableOp, kernel_op
from .lrn import NCS, NSC, empty_in_layout, layout_of

# Offsets are one byte: windows of more elements are delegated to torch by the functional API.
MAX_WINDOW_ELEMENTS = 256

# Integer dtypes torch pools on the CPU: the forward of the C++ CPU kernels (and backend "torch") takes them;
# on cuda no kernel of ours pools integers, so "auto" takes torch's (its rule for any dtype our kernels lack).
INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

# The backend policy (neither GPU backend has been measured on a GPU yet: re-order "auto" on cuda from the
# first benchmark run).  The C++ CPU kernels also take float64 (for gradcheck) and, forward, the integers.
BACKENDS = _backends.OpBackends.triton_cuda_cpu(("max_pool2d_forward", "max_pool2d_backward"),
                                                auto={"cuda": ("triton", "cuda"), "cpu": ("cpu",)},
                                                cpu_dtypes=(torch.float64,) + INTEGER_DTYPES)


def output_size(size, kernel, stride, pad, ceil_mode):
    """torch's pooling_output_shape for dilation 1 (floor division rounds toward -inf like div_rtn)."""
    out = (size + 2 * pad - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or its left padding
    return out


def output_hw(hw, kernel_size, stride, padding, ceil_mode):
    return tuple(output_size(hw[i], kernel_size[i], stride[i], padding[i], ceil_mode) for i in range(2))


def pool_layout(x):
    """Layout of a pooling op's outputs for input x: channels_last stays channels_last, else NCHW."""
    return layout_of(x) or NCS


def empty_pool_outputs(x, kernel_size, stride, padding, ceil_mode):
    """Uninitialized (y, offsets) for pooling 4-D x: the output's shape in pool_layout(x), offsets uint8."""
    shape = tuple(x.shape[:2]) + output_hw(x.shape[2:], kernel_size, stride, padding, ceil_mode)
    layout = pool_layout(x)
    return empty_in_layout(shape, layout, x), empty_in_layout(shape, layout, x, torch.uint8)


def kernel_ready(x, backend):
    """x as the backend's kernels take it: Triton takes any strides, C++ one of the two dense layouts."""
    if backend in ("cpu", "cuda") and layout_of(x) is None:
        return x.contiguous()
    return x


def in_layout(t, layout):
    """t stored in `layout` (a copy only when it is not already)."""
    return t if layout_of(t) == layout else empty_in_layout(t.shape, layout, t).copy_(t)


def _window_starts(out_hw, stride, padding, device):
    hstart = torch.arange(out_hw[0], device=device) * stride[0] - padding[0]
    wstart = torch.arange(out_hw[1], device=device) * stride[1] - padding[1]
    return hstart[:, None], wstart[None, :]


def offsets_from_indices(indices, width, kernel_size, stride, padding):
    """torch's flat indices ih * W + iw -> one-byte in-window offsets."""
    hstart, wstart = _window_starts(indices.shape[-2:], stride, padding, indices.device)
    ih, iw = indices // width, indices % width
    return ((ih - hstart) * kernel_size[1] + (iw - wstart)).to(torch.uint8)


def indices_from_offsets(offsets, width, kernel_size, stride, padding):
    """One-byte in-window offsets -> torch's flat indices ih * W + iw (int64)."""
    hstart, wstart = _window_starts(offsets.shape[-2:], stride, padding, offsets.device)
    o = offsets.long()
    return (hstart + o // kernel_size[1]) * width + (wstart + o % kernel_size[1])


def torch_pool_backward(dy, offsets, input_shape, layout, kernel_size, stride, padding, ceil_mode):
    """torch's own max-pool backward, routed by our offsets (the reference for every backend).  An offset
    naming no input element of its window (>= kH * kW, or a padding position; never written by a forward)
    routes nowhere, as in the kernels: torch's backward does not check its indices (one out of range crashed
    the process), so such a gradient is zeroed and sent to element 0."""
    H, W = input_shape[2], input_shape[3]
    hstart, wstart = _window_starts(offsets.shape[-2:], stride, padding, offsets.device)
    o = offsets.long()
    ih, iw = hstart + o // kernel_size[1], wstart + o % kernel_size[1]
    routed = (o < kernel_size[0] * kernel_size[1]) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    indices = torch.where(routed, ih * W + iw, 0)
    dy = torch.where(routed, dy, torch.zeros((), dtype=dy.dtype, device=dy.device))
    like = empty_in_layout(input_shape, layout, dy)  # read for its shape and layout only
    return torch.ops.aten.max_pool2d_with_indices_backward(dy, like, list(kernel_size), list(stride),
                                                           list(padding), [1, 1], ceil_mode, indices)


def triton_pool():
    """The Triton kernels module, imported on first use (importing triton costs ~1 s)."""
    from ..triton_kernels import pool as module
    return module


def _run_forward(x, kernel_size, stride, padding, ceil_mode, backend):
    x = kernel_ready(x, backend)
    y, offsets = empty_pool_outputs(x, kernel_size, stride, padding, ceil_mode)
    if y.numel() == 0:
        return y, offsets
    if backend == "torch":
        ref, indices = F.max_pool2d(x, kernel_size, stride, padding, 1, ceil_mode, return_indices=True)
        y.copy_(ref)
        offsets.copy_(offsets_from_indices(indices, x.shape[3], kernel_size, stride, padding))
    elif backend == "triton":
        triton_pool().max_pool2d_forward(x, y, offsets, kernel_size, stride, padding)
    else:
        _extension.load().max_pool2d_forward(x, y, offsets, *kernel_size, *stride, *padding,
                                             pool_layout(x) == NSC)
    return y, offsets


def _run_backward(dy, offsets, input_hw, channels_last, kernel_size, stride, padding, ceil_mode, backend):
    layout = NSC if channels_last else NCS
    N, C = dy.shape[0], dy.shape[1]
    shape = (N, C) + tuple(input_hw)
    if N * C == 0:
        return empty_in_layout(shape, layout, dy)
    if backend == "torch":
        return in_layout(torch_pool_backward(dy, offsets, shape, layout, kernel_size, stride, padding,
                                             ceil_mode), layout)
    dx = empty_in_layout(shape, layout, dy)
    if backend == "triton":
        triton_pool().max_pool2d_backward(dy, offsets, dx, kernel_size, stride, padding)
    else:
        _extension.load().max_pool2d_backward(in_layout(dy, layout), in_layout(offsets, layout), dx,
                                              *kernel_size, *stride, *padding, channels_last)
    return dx


def max_pool2d_forward(x: torch.Tensor, kernel_size: List[int], stride: List[int], padding: List[int],
                       ceil_mode: bool, backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    backend = BACKENDS.resolve(backend, x, "max_pool2d_forward")
    return _run_forward(x, kernel_size, stride, padding, ceil_mode, backend)


def _run_values(x, kernel_size, stride, padding, ceil_mode, backend):
    if backend not in ("cpu", "torch"):  # Triton and CUDA have no values-only kernels: their offsets dropped
        return _run_forward(x, kernel_size, stride, padding, ceil_mode, backend)[0]
    x = kernel_ready(x, backend)
    shape = tuple(x.shape[:2]) + output_hw(x.shape[2:], kernel_size, stride, padding, ceil_mode)
    y = empty_in_layout(shape, pool_layout(x), x)
    if y.numel() == 0:
        return y
    if backend == "torch":
        return y.copy_(F.max_pool2d(x, kernel_size, stride, padding, 1, ceil_mode))
    # Empty offsets: the C++ CPU kernels write y alone.
    _extension.load().max_pool2d_forward(x, y, torch.empty(0, dtype=torch.uint8, device=x.device), *kernel_size,
                                         *stride, *padding, pool_layout(x) == NSC)
    return y


def max_pool2d_values(x: torch.Tensor, kernel_size: List[int], stride: List[int], padding: List[int],
                      ceil_mode: bool, backend: str) -> torch.Tensor:
    backend = BACKENDS.resolve(backend, x, "max_pool2d_values")
    return _run_values(x, kernel_size, stride, padding, ceil_mode, backend)


def _max_pool2d_values_fake(x, kernel_size, stride, padding, ceil_mode, backend):
    return empty_pool_outputs(x, kernel_size, stride, padding, ceil_mode)[0]


_max_pool2d_values_op = kernel_op(max_pool2d_values, _max_pool2d_values_fake)


def max_pool2d_inference(x, kernel_size, stride, padding, ceil_mode, backend):
    """y of a 4-D x without autograd (for when no gradient is needed): the custom op max_pool2d_values while
    torch.compile traces, else its function (no dispatcher cost per call)."""
    if torch.compiler.is_compiling():
        return torch.ops.alexnet_kernels.max_pool2d_values(x, kernel_size, stride, padding, ceil_mode, backend)
    return max_pool2d_values(x, kernel_size, stride, padding, ceil_mode, backend)


def _max_pool2d_forward_fake(x, kernel_size, stride, padding, ceil_mode, backend):
    return empty_pool_outputs(x, kernel_size, stride, padding, ceil_mode)


def max_pool2d_backward(dy: torch.Tensor, offsets: torch.Tensor, input_hw: List[int], channels_last: bool,
                        kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
                        backend: str) -> torch.Tensor:
    _backends.check_same_device("max_pool2d_backward", dy=dy, offsets=offsets)
    backend = BACKENDS.resolve(backend, dy, "max_pool2d_backward")
    return _run_backward(dy, offsets, input_hw, channels_last, kernel_size, stride, padding, ceil_mode,
                         backend)


def _max_pool2d_backward_fake(dy, offsets, input_hw, channels_last, kernel_size, stride, padding, ceil_mode,
                              backend):
    return empty_in_layout(tuple(dy.shape[:2]) + tuple(input_hw), NSC if channels_last else NCS, dy)


def _save(inputs, output, _residuals):
    x, kernel_size, stride, padding, ceil_mode, backend = inputs
    y, offsets = output
    # One byte per output; the input is not kept.
    return (offsets,), (list(x.shape[2:]), layout_of(y) == NSC, kernel_size, stride, padding, ceil_mode, backend)


def _grads(backward, saved, params, grad_outputs, needs_input_grad):
    return (backward(grad_outputs[0], saved[0], *params),) + (None,) * 5


# max_pool2d(x, kernel_size, stride, padding, ceil_mode, backend) -> (y, offsets): 4-D max-pool with autograd
# (lists of two ints; the offsets get no gradient).
max_pool2d = DifferentiableOp("MaxPool2d", max_pool2d_forward, _max_pool2d_forward_fake, max_pool2d_backward,
                              _max_pool2d_backward_fake, _save, _grads, non_differentiable=(1,))


def max_pool2d_with_indices(x, kernel_size, stride, padding, ceil_mode, backend):
    """(y, torch's int64 flat indices ih * W + iw) of a 4-D x: our kernels' (y, offsets), the indices derived
    from the one-byte offsets (non-differentiable; y's gradient is our backward through the offsets)."""
    y, offsets = max_pool2d(x, kernel_size, stride, padding, ceil_mode, backend)
    return y, indices_from_offsets(offsets, x.shape[-1], kernel_size, stride, padding)
