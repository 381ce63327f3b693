"""Fused blocks: ReLU -> cross-channel LRN -> max-pool (AlexNet's layers 1 and 2 after the conv).

    import alexnet_kernels.fused as fused
    z = fused.relu_lrn_max_pool2d(conv_out, 5, 1e-4, 0.75, 2.0, 3, 2)
    b = fused.ReLULRNMaxPool2d(5, 1e-4, 0.75, 2.0, 3, 2)

z == max_pool2d(local_response_norm(relu(x), size, alpha, beta, k), kernel_size, stride, padding, ceil_mode)
with torch's math for each op, in one forward kernel (reads x once, writes z) and one backward kernel.
Autograd keeps x and one byte per output (the maximum's in-window offset); the ReLU and LRN outputs are
never stored.  The maximum is chosen among the LRN values rounded to x's dtype with torch's pooling rule,
so the gradient is routed exactly as in the unfused chain.
"""
import torch
import torch.nn.functional as F

from . import _backends
from . import lrn as _lrn
from ._torchscript import NotScriptable
from .ops import fused as _ops
from .ops import pool as _pool_ops
from .ops._registry import needs_autograd
from .pool import check_pool_arguments

__all__ = ["relu_lrn_max_pool2d", "ReLULRNMaxPool2d"]


def relu_lrn_max_pool2d(input, size, alpha=1e-4, beta=0.75, k=1.0, kernel_size=3, stride=2, padding=0,
                        ceil_mode=False, *, backend=None):
    """max_pool2d(local_response_norm(relu(input), size, alpha, beta, k), kernel_size, stride, padding,
    ceil_mode=ceil_mode) as one fused kernel each way.  LRN arguments as torch.nn.functional.
    local_response_norm, pool arguments as torch.nn.functional.max_pool2d (stride=None means kernel_size;
    the defaults are AlexNet's 3x3/s2).  input: (N, C, H, W).  backend as in
    alexnet_kernels.lrn.local_response_norm."""
    op = "relu_lrn_max_pool2d"
    kernel_size, stride, padding, _ = check_pool_arguments(op, input, kernel_size, stride, padding, 1, ceil_mode)
    if input.dim() != 4:
        raise ValueError("%s: expected a 4-D (N, C, H, W) input, got shape %s; for one (C, H, W) image pass "
                         "input.unsqueeze(0) (torch's local_response_norm would read a 3-D tensor as (N, C, L), "
                         "normalising across H, so the unbatched chain is ambiguous)" % (op, tuple(input.shape)))
    size, alpha, beta, k = _lrn.check_arguments(input, size, alpha, beta, k)
    backend = _backends.validate_backend_argument(op, backend)
    if kernel_size[0] * kernel_size[1] > _pool_ops.MAX_WINDOW_ELEMENTS:  # offsets are one byte
        lrn_out = _lrn.local_response_norm(torch.relu(input), size, alpha, beta, k, backend=backend)
        return F.max_pool2d(lrn_out, kernel_size, stride, padding, 1, ceil_mode)
    args = (input, size, alpha, beta, k, list(kernel_size), list(stride), list(padding), ceil_mode, backend)
    if needs_autograd(input):
        return _ops.relu_lrn_max_pool2d(*args)[0]
    return _ops.relu_lrn_max_pool2d_inference(*args)   # no gradient needed: no autograd node


class ReLULRNMaxPool2d(NotScriptable, torch.nn.Module):
    """relu -> LocalResponseNorm(size, alpha, beta, k) -> MaxPool2d(kernel_size, stride, padding, ceil_mode)
    as one module (no parameters, so its state_dict is empty like the three modules it replaces)."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, kernel_size=3, stride=2, padding=0, ceil_mode=False,
                 *, backend=None):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode
        self.backend = backend

    def forward(self, input):
        return relu_lrn_max_pool2d(input, self.size, self.alpha, self.beta, self.k, self.kernel_size,
                                   self.stride, self.padding, self.ceil_mode, backend=self.backend)

    def extra_repr(self):
        return ("size={}, alpha={}, beta={}, k={}, kernel_size={}, stride={}, padding={}, ceil_mode={}"
                .format(self.size, self.alpha, self.beta, self.k, self.kernel_size, self.stride, self.padding,
                        self.ceil_mode))
