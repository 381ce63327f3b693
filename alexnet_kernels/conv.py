"""Fused 2-D convolution + bias + ReLU: the functional API and a drop-in module.

    import alexnet_kernels.conv as conv
    y = conv.conv2d_relu(x, weight, bias, stride=4, padding=0, groups=1)  # relu(F.conv2d(x, weight, bias, ...))
    m = conv.Conv2dReLU(3, 96, 11, stride=4)   # nn.Conv2d's arguments and parameters (loads its state_dict)

Forward: one Triton implicit-GEMM kernel per call (groups inside the kernel, bias and ReLU in the epilogue,
the output written once; the reduction runs over K = Cin/groups * KH * KW flattened, so conv1's three
input channels do not waste the tensor cores).  fp16/bf16 accumulate in fp32; fp32 uses TF32 tensor cores
when torch.backends.cudnn.allow_tf32 is on (torch's default for convolutions) and exact fp32 when it is off.
channels_last is the fast layout: NCHW inputs are converted once (a copy of x, reused by the backward);
an NCHW weight is converted once per forward (its backward reuses the copy, see ops/conv.py
channels_last_weight), and
Conv2dReLU stores its weight channels_last, so its outputs are channels_last (torch's rule for convolutions)
and a network of them converts its activations once, at the first layer.

Backward: d(input), d(weight), d(bias); the ReLU mask is read from the saved output.  Two routes: Triton
dgrad/wgrad kernels (mask applied as dy is loaded, d(bias) in the wgrad pass), or one Triton pass that
writes the masked gradient and d(bias) followed by cuDNN's dgrad/wgrad (aten.convolution_backward).
backward_route="auto" measures both once per shape on the GPU and keeps the faster (measured_choices()).

backend: "auto" (default: on cuda the fastest of "triton", "cuda" and "torch", measured once per shape,
dtype and device; on cpu "cpu"), "triton", "cuda" (the hand-written CUDA C++ implicit GEMM of
csrc/conv_cuda.cu: mma.sync tensor cores -- bf16/fp16 with fp32 accumulation, TF32 for fp32 when allowed,
exact fp32 FMA when not -- a cp.async pipeline, bias + ReLU in the epilogue, groups one launch; its
backward: CUDA C++ dgrad and wgrad kernels that apply the ReLU mask as they load dy, d(bias) summed in the
wgrad pass in a fixed order; with backward_route="aten" the mask pass + cuDNN's dgrad and wgrad), "torch" (F.conv2d + relu: cuDNN / oneDNN), "cpu" (oneDNN's
convolution with the ReLU fused as its post-op, NCHW or channels_last as measured per shape; NaN/Inf inputs
and dtypes oneDNN lacks run F.conv2d + relu: see ops/conv.py).  First calls of a new shape pay Triton's autotuning (cached per shape for the
process) and the "auto" measurement: warm up before capturing a CUDA graph.

Delegated to torch.nn.functional.conv2d + relu (documented, tested): dilation != 1 and padding="same".
Under autocast, input, weight and bias are cast to the autocast dtype (float64 ones are left alone), as F.conv2d
does.
"""
import numbers

import torch
import torch.nn.functional as F

from . import _backends
from ._torchscript import NotScriptable
from .ops import conv as _ops
from .pool import _pair  # int-or-pair arguments, validated as torch's pooling does

__all__ = ["conv2d_relu", "Conv2dReLU", "measured_choices"]

measured_choices = _ops.measured_choices


def _check_tensors(op, input, weight, bias, groups):
    for name, t in (("input", input), ("weight", weight)) + ((("bias", bias),) if bias is not None else ()):
        if not isinstance(t, torch.Tensor):
            raise TypeError("%s: %s must be a torch.Tensor, got %s" % (op, name, type(t).__name__))
        if not t.is_floating_point():
            raise TypeError("%s: expected floating-point tensors, got %s of dtype %s" % (op, name, t.dtype))
    if input.dim() not in (3, 4):
        raise ValueError("%s: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got shape %s"
                         % (op, tuple(input.shape)))
    if weight.dim() != 4:
        raise ValueError("%s: weight must be 4-D (out_channels, in_channels / groups, kH, kW), got shape %s"
                         % (op, tuple(weight.shape)))
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError("%s: groups must be a positive int, got %r" % (op, groups))
    C, Cout = input.shape[-3], weight.shape[0]
    if C % groups or Cout % groups:
        raise ValueError("%s: in_channels (%d) and out_channels (%d) must both be divisible by groups (%d)"
                         % (op, C, Cout, groups))
    if weight.shape[1] * groups != C:
        raise ValueError("%s: weight of shape %s expects %d input channels (weight.shape[1] * groups = %d * %d), "
                         "got input of shape %s" % (op, tuple(weight.shape), weight.shape[1] * groups,
                                                    weight.shape[1], groups, tuple(input.shape)))
    if min(weight.shape) < 1:
        raise ValueError("%s: weight must not be empty, got shape %s" % (op, tuple(weight.shape)))
    if any(s == 0 for s in input.shape[-3:]):
        raise ValueError("%s: only the batch dimension may be empty, got input shape %s" % (op, tuple(input.shape)))
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != Cout):
        raise ValueError("%s: bias must be 1-D with out_channels = %d elements, got shape %s"
                         % (op, Cout, tuple(bias.shape)))
    others = (weight,) + ((bias,) if bias is not None else ())
    if any(t.dtype != input.dtype for t in others):
        raise TypeError("%s: input, weight and bias must have the same dtype, got %s" %
                        (op, ", ".join(str(t.dtype) for t in (input,) + others)))
    if any(t.device != input.device for t in others):
        raise ValueError("%s: input, weight and bias must be on the same device, got %s" %
                         (op, ", ".join(str(t.device) for t in (input,) + others)))


def _autocast(input, weight, bias):
    """F.conv2d's autocast behaviour: floating inputs are cast to the autocast dtype of their device, except
    float64 ones, which autocast leaves alone (as torch does: a float64 model stays float64)."""
    device_type = input.device.type
    if device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        cast = (lambda t: t.to(dtype) if t is not None and t.is_floating_point()
                and t.dtype not in (dtype, torch.float64) else t)
        return cast(input), cast(weight), cast(bias)
    return input, weight, bias


def conv2d_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend=None,
                backward_route="auto"):
    """relu(torch.nn.functional.conv2d(input, weight, bias, stride, padding, dilation, groups)).

    input (N, C, H, W) or (C, H, W); weight (out_channels, C / groups, kH, kW); bias (out_channels,) or None.
    padding: an int, a pair, "valid" or "same".  backward_route ("auto", "triton", "aten"): how
    backend="triton" computes the gradients (see the module docstring); backend="cuda": "aten" is the mask
    pass + cuDNN, anything else its CUDA C++ dgrad and wgrad."""
    op = "conv2d_relu"
    input, weight, bias = _autocast(input, weight, bias)
    _check_tensors(op, input, weight, bias, groups)
    backend = _backends.validate_backend_argument(op, backend)
    if backward_route not in _ops.ROUTES:
        raise ValueError("%s: backward_route must be one of %s, got %r" % (op, ", ".join(map(repr, _ops.ROUTES)),
                                                                           backward_route))
    stride = _pair(op, "stride", stride, 1)
    dilation = _pair(op, "dilation", dilation, 1)
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ValueError("%s: padding must be an int, a pair, 'valid' or 'same', got %r" % (op, padding))
        if padding == "same" and stride != (1, 1):
            raise ValueError("%s: padding='same' is not supported for strided convolutions (torch rejects it too)"
                             % op)
    if padding == "same" or dilation != (1, 1):
        return torch.relu(F.conv2d(input, weight, bias, stride, padding, dilation, groups))
    padding = (0, 0) if padding == "valid" else _pair(op, "padding", padding, 0)
    out = _ops.output_hw(input.shape[-2:], weight.shape[-2:], stride, padding)
    if min(out) < 1:
        raise ValueError("%s: the kernel %s is larger than the padded input %s (padding %s): the output would be "
                         "%dx%d" % (op, tuple(weight.shape[-2:]), tuple(input.shape[-2:]), padding, *out))
    allow_tf32 = bool(torch.backends.cudnn.allow_tf32)
    stride, padding = list(stride), list(padding)  # the op's List[int]
    if input.dim() == 3:
        return _ops.conv2d_relu(input.unsqueeze(0), weight, bias, stride, padding, groups, allow_tf32, backend,
                                backward_route).squeeze(0)
    return _ops.conv2d_relu(input, weight, bias, stride, padding, groups, allow_tf32, backend, backward_route)


class Conv2dReLU(NotScriptable, torch.nn.Conv2d):
    """Drop-in for nn.Conv2d followed by nn.ReLU: a subclass of nn.Conv2d with its constructor arguments,
    parameters (weight, bias), initialisation and state_dict; the keyword-only `backend` (and
    `backward_route`) choose the kernels.  The weight is stored channels_last (the kernels' layout: no copy
    per call; load_state_dict copies values into it and keeps that layout), so the output is channels_last
    whatever the input's layout, as torch's convolution gives for a channels_last weight."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None, *, backend=None, backward_route="auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        with torch.no_grad():
            self.weight.data = self.weight.data.contiguous(memory_format=torch.channels_last)
        self.backend = backend
        self.backward_route = backward_route

    def forward(self, input):
        padding = self.padding
        if self.padding_mode != "zeros":  # as nn.Conv2d: pad explicitly, then convolve without padding
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return conv2d_relu(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups,
                           backend=self.backend, backward_route=self.backward_route)
