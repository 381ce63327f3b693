"""Counter-based (Philox) dropout with no stored mask, and the fused bias + ReLU + dropout (the FC epilogue).

    import alexnet_kernels.dropout as dr
    y = dr.dropout(x, p=0.5, training=True)                   # torch.nn.functional.dropout's signature
    m = dr.Dropout(0.5)                                       # drop-in for torch.nn.Dropout
    h = dr.bias_relu_dropout(x, bias, p=0.5, training=True)   # dropout(relu(x + bias)) in one kernel
    fc = dr.LinearReLUDropout(4096, 4096, p=0.5)              # nn.Linear -> ReLU -> Dropout as one module

Inverted dropout: kept elements are scaled by 1/(1-p).  Each call draws a 64-bit seed from torch's
generator (the default one of x's device, or `generator=`), so torch.manual_seed reproduces masks and
successive calls are independent; the mask is then a pure function of (seed, element index) computed by
Philox-4x32-10, identical on every backend and for any launch configuration.  Masks are NOT torch's bit for
bit (torch's dropout uses its own stream).  Autograd keeps the seed (8 bytes) -- the backward regenerates
the mask -- and, for bias_relu_dropout, the output y (the ReLU condition): nothing mask-sized.
"""
import math
import numbers

import torch
import torch.nn.functional as F

from . import _backends
from ._torchscript import NotScriptable
from .ops import dropout as _ops

__all__ = ["dropout", "Dropout", "bias_relu_dropout", "LinearReLUDropout"]


def _check_p(op, p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError("%s: p must be a real number, got %r" % (op, p))
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError("%s: dropout probability has to be between 0 and 1, but got %r" % (op, p))
    return p


def _check_input(op, name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError("%s: %s must be a torch.Tensor, got %s" % (op, name, type(t).__name__))
    if not t.is_floating_point():
        raise TypeError("%s: expected a floating-point %s, got dtype %s" % (op, name, t.dtype))


def _check_flags(op, training, generator):
    """torch's dropout takes `train` as a bool only (TypeError otherwise); generator: None or a torch.Generator."""
    if not isinstance(training, bool):
        raise TypeError("%s: training must be a bool, got %r (%s)" % (op, training, type(training).__name__))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError("%s: generator must be a torch.Generator or None, got %r (%s)"
                        % (op, generator, type(generator).__name__))


def draw_seed(device, generator=None):
    """A 64-bit seed drawn from torch's generator on `device` (a 1-element int64 tensor there): a device-side
    draw, so CUDA-graph capture and torch.compile handle it like any torch RNG call."""
    if generator is not None and generator.device.type != torch.device(device).type:
        raise ValueError("generator is on %s but the input is on %s" % (generator.device, device))
    # generator=None passed explicitly traces to aten.randint.low_generator, which torch.onnx cannot translate;
    # left out, the call is aten.randint.low on the same default generator (the same draws).
    extra = {} if generator is None else {"generator": generator}
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device, **extra)


def dropout(input, p=0.5, training=True, inplace=False, *, generator=None, backend=None):
    """torch.nn.functional.dropout on alexnet_kernels' kernels (inverted dropout, Philox mask).

    p = 0 or training=False returns `input` itself (as torch does, inplace or not); p = 1 gives input * 0.
    inplace=True where a mask would be applied is rejected (ValueError): the result is always a new tensor.
    backend as in alexnet_kernels.lrn."""
    op = "dropout"
    p = _check_p(op, p)
    _check_input(op, "input", input)
    _check_flags(op, training, generator)
    backend = _backends.validate_backend_argument(op, backend)
    if not training or p == 0.0:
        return input  # nothing to write: inplace=True holds trivially (an eval-mode nn.Dropout(inplace=True))
    if inplace:
        raise ValueError("dropout: inplace=True is not supported in training with p > 0 (the kernels write a "
                         "new tensor); use inplace=False")
    seed = draw_seed(input.device, generator)
    return _ops.dropout(input, seed, p, backend)


class Dropout(NotScriptable, torch.nn.Dropout):
    """Drop-in for torch.nn.Dropout (a subclass: same arguments, repr, empty state_dict, train/eval).
    inplace=True is rejected when the module is called in training mode."""

    def __init__(self, p=0.5, inplace=False, *, backend=None):
        super().__init__(p, inplace)
        self.backend = backend

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace, backend=self.backend)


def bias_relu_dropout(input, bias, p=0.5, training=True, *, generator=None, backend=None):
    """dropout(relu(input + bias), p, training) in one kernel each way.  input (..., N), bias (N,).

    Backward gives d(input) and d(bias) (summed over all leading dims, deterministically) from the saved
    output and the regenerated mask.  training=False or p = 0 still fuses bias + ReLU (no mask)."""
    op = "bias_relu_dropout"
    p = _check_p(op, p)
    _check_input(op, "input", input)
    _check_input(op, "bias", bias)
    _check_flags(op, training, generator)
    if input.dim() < 1 or bias.dim() != 1 or bias.shape[0] != input.shape[-1]:
        raise ValueError("%s: bias must be 1-D with input.shape[-1] = %s elements, got input %s and bias %s"
                         % (op, input.shape[-1] if input.dim() else None, tuple(input.shape), tuple(bias.shape)))
    if bias.dtype != input.dtype or bias.device != input.device:
        raise ValueError("%s: bias must have input's dtype and device (%s, %s), got %s, %s"
                         % (op, input.dtype, input.device, bias.dtype, bias.device))
    backend = _backends.validate_backend_argument(op, backend)
    if not training:
        p = 0.0
    seed = draw_seed(input.device, generator) if p > 0 else torch.zeros(1, dtype=torch.int64, device=input.device)
    # -1 fails when N = 0; math.prod rather than torch.Size.numel, which fixes a symbolic batch size to its
    # traced value (torch.export with a dynamic batch dim raised, torch.compile recompiled per batch size).
    x2 = input.reshape(math.prod(input.shape[:-1]), input.shape[-1]).contiguous()
    return _ops.bias_relu_dropout(x2, bias.contiguous(), seed, p, backend).view(input.shape)


class LinearReLUDropout(NotScriptable, torch.nn.Linear):
    """nn.Linear -> ReLU -> Dropout(p) as one module: the matmul is torch's (F.linear without the bias), the
    bias + ReLU + dropout epilogue is bias_relu_dropout.  nn.Linear's constructor arguments, parameters and
    state_dict (it subclasses nn.Linear); p=0 gives Linear -> ReLU.  Dropout follows self.training."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *, p=0.5, backend=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.p = _check_p("LinearReLUDropout", p)
        self.backend = backend

    def forward(self, input):
        out = F.linear(input, self.weight)
        if self.bias is None:
            bias = out.new_zeros(out.shape[-1])
        else:
            # Under autocast F.linear's output is in the autocast dtype while the bias parameter is not.
            bias = self.bias.to(out.dtype)
        return bias_relu_dropout(out, bias, self.p, self.training, backend=self.backend)

    def extra_repr(self):
        return "%s, p=%s" % (super().extra_repr(), self.p)
