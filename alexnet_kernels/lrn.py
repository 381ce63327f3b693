"""Cross-channel Local Response Normalization: the functional API and a drop-in module.

    import alexnet_kernels.lrn as lrn
    y = lrn.local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0)
    m = lrn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

Same signature and math as torch.nn.functional.local_response_norm / torch.nn.LocalResponseNorm:
    b_c = a_c / (k + alpha / n * sum_{c' = c - n//2}^{c + (n-1)//2} a_{c'}^2) ^ beta
(alpha divided by n, zero padding at the channel edges).  See docs/lrn.md for other libraries'
conventions and how to convert alpha.
"""
import math
import numbers

import torch

from . import _backends
from ._torchscript import NotScriptable
from .ops import lrn as _ops

__all__ = ["local_response_norm", "LocalResponseNorm"]


def _check_number(name, value):
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError("local_response_norm: %s must be a real number, got %r" % (name, value))
    value = float(value)
    # Comparisons rather than math.isfinite: under torch.compile(dynamic=True) a module's float attribute
    # is a SymFloat, which math.isfinite cannot trace (a graph break, an error with fullgraph=True).
    if not -math.inf < value < math.inf:  # False for NaN too
        raise ValueError("local_response_norm: %s must be finite, got %r" % (name, value))
    return value


def check_arguments(input, size, alpha, beta, k):
    """Validate like torch and reject what makes the math undefined; returns the float parameters.

    Accepted: size an int in [1, 2**63 - 1] (from n = 2C - 1 on, every window spans all C channels; the
    divisor stays n); alpha >= 0, k > 0 and beta finite.  Then the base
    k + alpha/n * sum(a^2) is >= k > 0 for every finite input, so base^-beta is defined and finite.
    k <= 0 or alpha < 0 can make the base zero or negative (a division by zero, or a negative number
    to a fractional power): rejected rather than answered with inf/NaN.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError("local_response_norm: input must be a torch.Tensor, got %s" % type(input).__name__)
    if input.dim() < 3:
        raise ValueError("local_response_norm: expected an input of 3 or more dimensions (N, C, *), "
                         "got shape %s" % (tuple(input.shape),))
    if not input.is_floating_point():
        raise TypeError("local_response_norm: expected a floating-point input, got dtype %s" % input.dtype)
    if type(size) is not int and (isinstance(size, bool) or not isinstance(size, numbers.Integral)):
        raise TypeError("local_response_norm: size must be an int, got %r" % (size,))
    if size < 1:
        raise ValueError("local_response_norm: size must be >= 1, got %d" % size)
    if size > 2**63 - 1:  # the ops take an int64 (a window beyond C - 1 channels a side adds only zeros)
        raise ValueError("local_response_norm: size is too large: at most 2**63 - 1, got %d" % size)
    alpha, beta, k = (_check_number(n, v) for n, v in (("alpha", alpha), ("beta", beta), ("k", k)))
    if alpha < 0:
        raise ValueError("local_response_norm: alpha must be >= 0 (a negative alpha can make the base "
                         "k + alpha/n*sum(a^2) negative), got %r" % alpha)
    if k <= 0:
        raise ValueError("local_response_norm: k must be > 0 (k <= 0 can make the base "
                         "k + alpha/n*sum(a^2) zero), got %r" % k)
    return int(size), alpha, beta, k


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0, *, backend=None):
    """torch.nn.functional.local_response_norm on alexnet_kernels' kernels.

    backend: "auto" (default; per device, the preference measured so far -- see docs/lrn.md), "triton", "cuda",
    "cpu" (the C++ CPU kernel), or "torch" (torch's composite).  $ALEXNET_KERNELS_BACKEND sets the
    default.  A backend that is not built, or cannot take the input, raises BackendUnavailableError.
    Autograd saves only `input` for backward.
    """
    size, alpha, beta, k = check_arguments(input, size, alpha, beta, k)
    backend = _backends.validate_backend_argument("local_response_norm", backend)
    return _ops.lrn(input, size, alpha, beta, k, backend)


class LocalResponseNorm(NotScriptable, torch.nn.LocalResponseNorm):
    """Drop-in for torch.nn.LocalResponseNorm (same arguments, repr and empty state_dict).

    It subclasses torch's module, so isinstance checks and state_dict loading keep working; the
    keyword-only `backend` chooses the kernels (see local_response_norm).
    """

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, *, backend=None):
        super().__init__(size, alpha, beta, k)
        self.backend = backend

    def forward(self, input):
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k, backend=self.backend)
