"""2-D max-pooling: the functional API and a drop-in module.

    import alexnet_kernels.pool as pool
    y = pool.max_pool2d(x, kernel_size=3, stride=2)   # torch.nn.functional.max_pool2d's signature
    m = pool.MaxPool2d(3, 2)                          # drop-in for torch.nn.MaxPool2d

dtypes: what torch's max_pool2d takes -- floating point, and on the CPU uint8 and int8-int64 (the C++ CPU
kernels' forward; integers have no gradient); a dtype torch rejects raises torch's error.
Values and the choice of maximum (the first in scan order on ties -- after a ReLU whole windows are zero --
and the last NaN when there are NaNs) are torch's exactly, in every dtype.  The backward is a deterministic
gather (no atomics): each input element sums its routed gradients in torch's order, in fp32 (fp64 for fp64),
rounded once.  So fp32/fp64 gradients are torch's bit for bit; fp16/bf16 ones are the fp32 sums rounded once,
as torch's CUDA kernels compute them (per torch's source), whereas torch's CPU kernels round after every
addition (the same bits unless three or more windows route to one element).  See docs/max_pool.md.  Autograd
keeps one byte per output (the maximum's in-window offset) instead of torch's int64 index and does not keep the
input.  When no gradient is needed (grad mode off, or an input that does not require grad) and
return_indices=False, the forward writes the values alone (the op max_pool2d_values; the C++ CPU kernels then
compute no offsets).

return_indices=True returns torch's int64 flat indices (ih * W + iw), derived from our kernels' one-byte
offsets: bit-equal to torch's, so nn.MaxUnpool2d takes them.
Delegated to torch.nn.functional.max_pool2d (documented, tested): dilation != 1 and windows of more than 256
elements (the offsets are one byte).
"""
import numbers

import torch
import torch.nn.functional as F

from . import _backends
from ._torchscript import NotScriptable
from .ops import pool as _ops
from .ops._registry import needs_autograd

__all__ = ["max_pool2d", "MaxPool2d"]


# torch's pooling ops take these arguments as C ints and raise beyond (so do the C++ and Triton kernels).
MAX_POOL_ARGUMENT = 2**31 - 1


def _pair(op, name, value, minimum):
    """An int or a sequence of 1 or 2 ints -> a pair, each in [minimum, 2**31 - 1] (torch's accepted forms)."""
    if type(value) is int:   # the common case, without the numbers.Integral check's cost (~1.5 us a call)
        items = (value, value)
    else:
        items = list(value) if isinstance(value, (tuple, list, torch.Size)) else [value]
        if len(items) == 1:
            items = items * 2
        if len(items) != 2 or any(type(v) is not int and (isinstance(v, bool) or not isinstance(v, numbers.Integral))
                                  for v in items):
            raise TypeError("%s: %s must be an int or a tuple of 1 or 2 ints, got %r" % (op, name, value))
        items = tuple(int(v) for v in items)
    if min(items) < minimum:
        raise ValueError("%s: %s must be >= %d, got %r" % (op, name, minimum, value))
    if max(items) > MAX_POOL_ARGUMENT:
        raise ValueError("%s: %s is too large: at most 2**31 - 1 (torch raises too), got %r" % (op, name, value))
    return items


def check_pool_arguments(op, input, kernel_size, stride, padding, dilation, ceil_mode, integers=False):
    """Validate like torch's max_pool2d; returns (kernel_size, stride, padding, dilation) as pairs.
    integers: whether the op takes the integer dtypes torch pools (else floating point only)."""
    if not isinstance(input, torch.Tensor):
        raise TypeError("%s: input must be a torch.Tensor, got %s" % (op, type(input).__name__))
    if input.dim() not in (3, 4):
        raise ValueError("%s: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape %s"
                         % (op, tuple(input.shape)))
    if not input.is_floating_point() and not (integers and input.dtype in _ops.INTEGER_DTYPES):
        if integers:
            # A dtype torch's max_pool2d rejects too (bool, uint16-64, complex): torch's own error.
            F.max_pool2d(input, 1)
        raise TypeError("%s: expected a %s input, got dtype %s"
                        % (op, "floating-point or integer (uint8, int8-int64)" if integers else "floating-point",
                           input.dtype))
    if any(s == 0 for s in input.shape[-3:]):
        raise ValueError("%s: only the batch dimension may be empty, got shape %s" % (op, tuple(input.shape)))
    kernel_size = _pair(op, "kernel_size", kernel_size, 1)
    stride = kernel_size if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    dilation = _pair(op, "dilation", dilation, 1)
    if not isinstance(ceil_mode, bool):
        raise TypeError("%s: ceil_mode must be a bool, got %r" % (op, ceil_mode))
    # torch's rule is against the kernel size itself, dilated or not (pool2d_shape_check: kW / 2 >= padW).
    if any(p > kern // 2 for p, kern in zip(padding, kernel_size)):
        raise ValueError("%s: padding must be at most half of the kernel size, got padding %s for kernel_size "
                         "%s (torch rejects it too)" % (op, padding, kernel_size))
    out = tuple(_ops.output_size(input.shape[-2 + i], (kernel_size[i] - 1) * dilation[i] + 1, stride[i],
                                 padding[i], ceil_mode) for i in range(2))
    if min(out) < 1:
        raise ValueError("%s: the kernel %s is larger than the padded input %s (padding %s): the output "
                         "would be %dx%d" % (op, kernel_size, tuple(input.shape[-2:]), padding, *out))
    return kernel_size, stride, padding, dilation


def batched(fn, input):
    """Run fn on a 4-D view of a 3-D (C, H, W) or 4-D input; the result has the input's rank."""
    if input.dim() == 3:
        return fn(input.unsqueeze(0)).squeeze(0)
    return fn(input)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False,
               *, backend=None):
    """torch.nn.functional.max_pool2d on alexnet_kernels' kernels.

    backend: "auto" (default), "triton", "cuda", "cpu" (C++ CPU kernels) or "torch"; $ALEXNET_KERNELS_BACKEND
    sets the default.  A backend that is not built or cannot take the input raises BackendUnavailableError.
    return_indices=True: torch's int64 indices from our kernels' offsets.  dilation != 1 and windows of more
    than 256 elements are computed by torch.
    """
    op = "max_pool2d"
    kernel_size, stride, padding, dilation = check_pool_arguments(op, input, kernel_size, stride, padding,
                                                                  dilation, ceil_mode, integers=True)
    backend = _backends.validate_backend_argument(op, backend)
    if dilation != (1, 1) or kernel_size[0] * kernel_size[1] > _ops.MAX_WINDOW_ELEMENTS:
        return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    kernel_size, stride, padding = list(kernel_size), list(stride), list(padding)  # the op's List[int]
    if return_indices:
        if input.dim() == 3:
            y, indices = _ops.max_pool2d_with_indices(input.unsqueeze(0), kernel_size, stride, padding, ceil_mode,
                                                      backend)
            return y.squeeze(0), indices.squeeze(0)
        return _ops.max_pool2d_with_indices(input, kernel_size, stride, padding, ceil_mode, backend)
    if needs_autograd(input):
        return batched(lambda x: _ops.max_pool2d(x, kernel_size, stride, padding, ceil_mode, backend)[0], input)
    # No gradient needed (inference): y alone, no offsets written.
    return batched(lambda x: _ops.max_pool2d_inference(x, kernel_size, stride, padding, ceil_mode, backend), input)


class MaxPool2d(NotScriptable, torch.nn.MaxPool2d):
    """Drop-in for torch.nn.MaxPool2d (same arguments, repr and empty state_dict; a subclass, so
    isinstance checks keep working); the keyword-only `backend` chooses the kernels."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False,
                 *, backend=None):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self.backend = backend

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices, backend=self.backend)
