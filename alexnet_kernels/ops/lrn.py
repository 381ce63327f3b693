"""Cross-channel LRN as torch.library custom ops, with fake (meta) kernels and registered autograd.

    torch.ops.alexnet_kernels.lrn_forward(x, size, alpha, beta, k, backend) -> y
    torch.ops.alexnet_kernels.lrn_backward(dy, x, size, alpha, beta, k, backend) -> dx

Backends: "triton", "cuda" (C++/CUDA in csrc/), "cpu" (C++ CPU in csrc/), "torch" (the reference
composite, torch.nn.functional.local_response_norm), and "auto", resolved here at run time so that
torch.compile traces nothing but the op.

Saved for backward: the input x only (one tensor the size of the input).  The backward recomputes the
normaliser from x, so it reads x and dy and writes dx -- 3 tensors, where cuDNN's reads y as well.
Layouts: NCHW-contiguous and channels_last(-3d)-contiguous inputs run natively (no layout copy); the
output has the input's layout.  Any other strides are copied once to contiguous first.
"""
import torch
import torch.nn.functional as F

from .. import _backends, _extension
from ._registry import DifferentiableOp

NCS, NSC = "NCS", "NSC"   # (N, C, S) strides (C*S, S, 1) and (C*S, 1, C)


def _spatial_last_perm(ndim):
    return (0,) + tuple(range(2, ndim)) + (1,)


def layout_of(x):
    """NCS, NSC, or None when the kernels cannot take x's strides without a copy."""
    if x.is_contiguous():
        return NCS
    if x.permute(_spatial_last_perm(x.dim())).is_contiguous():
        return NSC
    return None


def empty_in_layout(shape, layout, like, dtype=None):
    """An uninitialised tensor of `shape` stored in `layout`, on like's device, of like's dtype by default."""
    dtype = like.dtype if dtype is None else dtype
    if layout == NCS:
        return torch.empty(shape, dtype=dtype, device=like.device)
    perm = _spatial_last_perm(len(shape))
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    return torch.empty([shape[p] for p in perm], dtype=dtype, device=like.device).permute(inverse)


def as_ncs_view(t, layout):
    """(N, C, S) view of a tensor stored in `layout` (no copy)."""
    N, C = t.shape[0], t.shape[1]
    if layout == NCS:
        return t.view(N, C, -1)
    return t.permute(_spatial_last_perm(t.dim())).reshape(N, -1, C).transpose(1, 2)


def output_layout(x):
    return layout_of(x) or NCS


# The backend policy: the dtypes each backend's kernels take, and what "auto" tries.  On cuda, Triton
# first: it is the only GPU backend measured (and checked against torch) on a GPU so far, see
# benchmarks/results/README.md; the CUDA kernels have run only under the host emulator
# (tests/test_cuda_emulation.py).  Re-order from the next full GPU benchmark run.  The C++ CPU kernels also
# take float64 (for gradcheck).
BACKENDS = _backends.OpBackends.triton_cuda_cpu(("lrn_forward", "lrn_backward"),
                                                auto={"cuda": ("triton", "cuda"), "cpu": ("cpu",)})


def triton_lrn():
    """The Triton kernels module, imported on first use (importing triton costs ~1 s)."""
    from ..triton_kernels import lrn as module
    return module


def _window_sum(t, before, after):
    """sum_{j=c-before..c+after} t_j along dim 1 (zero outside [0, C)), any trailing dims."""
    N, C = t.shape[0], t.shape[1]
    t5 = t.reshape(N, 1, C, -1, 1)
    t5 = F.pad(t5, (0, 0, 0, 0, before, after))
    return F.avg_pool3d(t5, (before + after + 1, 1, 1), stride=1, divisor_override=1).reshape(t.shape)


def clipped_reach(size, channels):
    """W(c)'s (pre, post) = (n // 2, (n - 1) // 2), each clipped to C - 1: from a channel of [0, C) the
    offsets beyond C - 1 reach only the zero padding, so any n runs as a window of at most 2C - 1 channels
    with the same sums (the divisor stays n).  Every backend clips alike (the kernels in C++ and Triton)."""
    limit = max(channels - 1, 0)
    return min(size // 2, limit), min((size - 1) // 2, limit)


def torch_local_response_norm(x, size, alpha, beta, k):
    """torch.nn.functional.local_response_norm(x, size, alpha, beta, k), also for an n whose zero padding
    torch would allocate in full (n = 2**31 pads 2**31 channel planes): the padding is clipped to C - 1 a
    side, the rest is torch's sequence of ops, so the values are torch's bit for bit (tested)."""
    C = x.shape[1]
    pre, post = clipped_reach(size, C)
    if (pre, post) == (size // 2, (size - 1) // 2):
        return F.local_response_norm(x, size, alpha, beta, k)
    div = x.mul(x)
    if x.dim() == 3:
        div = F.pad(div.unsqueeze(1), (0, 0, pre, post))
        div = F.avg_pool2d(div, (pre + post + 1, 1), stride=1, divisor_override=size).squeeze(1)
    else:
        sizes = x.size()
        div = F.pad(div.view(sizes[0], 1, sizes[1], sizes[2], -1), (0, 0, 0, 0, pre, post))
        div = F.avg_pool3d(div, (pre + post + 1, 1, 1), stride=1, divisor_override=size).squeeze(1).view(sizes)
    return x / div.mul(alpha).add(k).pow(beta)


def reference_backward(dy, x, size, alpha, beta, k):
    """The input gradient of PyTorch's LRN in torch ops (fp32 accumulation for fp16/bf16)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xa, dya = x.to(acc), dy.to(acc)
    pre, post = clipped_reach(size, x.shape[1])
    base = k + (alpha / size) * _window_sum(xa * xa, pre, post)
    # As the kernels (csrc/lrn_math.h): base^(-beta - 1) as scale / base, and dy * scale rather than
    # dy * base^(-beta - 1) * base, which is 0 * inf = NaN (or underflows to 0) when x*x overflows.
    scale = base.pow(-beta)
    tsum = _window_sum(dya * xa * (scale / base), post, pre)  # the transposed window
    return (dya * scale - (2.0 * alpha * beta / size) * xa * tsum).to(x.dtype)


def _run_forward(x, size, alpha, beta, k, backend):
    layout = layout_of(x)
    if layout is None:
        x, layout = x.contiguous(), NCS
    y = torch.empty_like(x)  # x is dense in `layout`: empty_like keeps its strides exactly
    if x.numel() == 0:
        return y
    if backend == "torch":
        y.copy_(torch_local_response_norm(x, size, alpha, beta, k))
    elif backend == "triton":
        triton_lrn().lrn_forward(x, y, size, alpha, beta, k, layout == NSC)
    else:
        _extension.load().lrn_forward(as_ncs_view(x, layout), as_ncs_view(y, layout), size, alpha, beta, k,
                                      layout == NSC)
    return y


def _run_backward(dy, x, size, alpha, beta, k, backend):
    layout = layout_of(x)
    if layout is None:
        x, layout = x.contiguous(), NCS
    if layout_of(dy) != layout:
        # dy comes from autograd in whatever layout the next op produced: match x's once.
        dy = empty_in_layout(dy.shape, layout, dy).copy_(dy)
    dx = torch.empty_like(x)
    if x.numel() == 0:
        return dx
    if backend == "torch":
        dx.copy_(reference_backward(dy, x, size, alpha, beta, k))
    elif backend == "triton":
        triton_lrn().lrn_backward(x, dy, dx, size, alpha, beta, k, layout == NSC)
    else:
        _extension.load().lrn_backward(*(as_ncs_view(t, layout) for t in (x, dy, dx)), size, alpha, beta, k,
                                       layout == NSC)
    return dx


def lrn_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, backend: str) -> torch.Tensor:
    return _run_forward(x, size, alpha, beta, k, BACKENDS.resolve(backend, x, "lrn_forward"))


def _lrn_forward_fake(x, size, alpha, beta, k, backend):
    return empty_in_layout(x.shape, output_layout(x), x)


def lrn_backward(dy: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                 backend: str) -> torch.Tensor:
    _backends.check_same_device("lrn_backward", dy=dy, x=x)
    return _run_backward(dy, x, size, alpha, beta, k, BACKENDS.resolve(backend, x, "lrn_backward"))


def _lrn_backward_fake(dy, x, size, alpha, beta, k, backend):
    return empty_in_layout(x.shape, output_layout(x), x)


def _save(inputs, y, _residuals):
    x, size, alpha, beta, k, backend = inputs
    return (x,), (size, alpha, beta, k, backend)  # the only tensor kept: the normaliser is recomputed from x


def _grads(backward, saved, params, grad_outputs, needs_input_grad):
    return (backward(grad_outputs[0], saved[0], *params),) + (None,) * 5


# lrn(x, size, alpha, beta, k, backend): LRN with autograd.
lrn = DifferentiableOp("LRN", lrn_forward, _lrn_forward_fake, lrn_backward, _lrn_backward_fake, _save, _grads)
