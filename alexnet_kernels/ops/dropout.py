"""Counter-based (Philox) dropout and the fused bias + ReLU + dropout as torch.library custom ops.

    torch.ops.alexnet_kernels.dropout_forward(x, seed, p, backend) -> y
    torch.ops.alexnet_kernels.dropout_backward(dy, seed, p, order, backend) -> dx
    torch.ops.alexnet_kernels.bias_relu_dropout_forward(x, bias, seed, p, backend) -> y
    torch.ops.alexnet_kernels.bias_relu_dropout_backward(dy, y, seed, p, backend) -> (dx, dbias)

The mask is a pure function of (seed, element index) -- see triton_kernels/dropout.py for the exact
definition, the same in every backend, the "torch" one included (written in torch integer ops) -- so the
backward regenerates it: autograd keeps the 8-byte seed for dropout, and the output y (no mask) for
bias_relu_dropout.  `seed` is a 1-element int64 tensor on the input's device, drawn from torch's generator
by the functional API (alexnet_kernels.dropout), which is what makes manual_seed / generator= reproduce
masks, successive calls independent, and CUDA-graph replays draw fresh masks.

Element index: dropout keys each element by its position in the input's memory order (a channels_last
tensor is not copied); `order` is that permutation of the dims, so the backward reads dy in the same order.
bias_relu_dropout takes a row-major (M, N) input: index m*N + n.
"""
from typing import List, Tuple

import torch

from .. import _backends, _extension
from ._registry import DifferentiableOp

# The backend policy of both ops ("auto" on cuda: not measured on a GPU yet, Triton first as for the other
# ops).  The C++ CPU kernels also take float64 (for gradcheck).
BACKENDS = _backends.OpBackends.triton_cuda_cpu(
    ("dropout_forward", "bias_relu_dropout_forward", "bias_relu_dropout_backward"),
    auto={"cuda": ("triton", "cuda"), "cpu": ("cpu",)})


def triton_dropout():
    from ..triton_kernels import dropout as module
    return module


def threshold_and_scale(p):
    """keep(i) = (r >> 8) >= threshold with threshold = round(p * 2**24); kept values are scaled by 1/(1-p)."""
    return int(round(p * (1 << 24))), (1.0 / (1.0 - p) if p < 1.0 else 1.0)


# ---------------------------------------------------------------------------------------------------
# The mask in torch integer ops (the "torch" backend, and the tests' reference)

_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
_LO32 = 0xFFFFFFFF


def _mul_hi_lo(a, b):
    """(hi, lo) 32-bit halves of a * b for int64 tensors holding uint32 values, without int64 overflow."""
    p_lo = (a & 0xFFFF) * b          # < 2**48
    p_hi = (a >> 16) * b             # < 2**48; a * b = p_hi * 2**16 + p_lo
    s = ((p_hi & 0xFFFF) << 16) + p_lo
    return ((p_hi >> 16) + (s >> 32)) & _LO32, s & _LO32


def philox4x32_10_torch(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 on int64 tensors holding uint32 values (k0, k1: python ints or int64 tensors that
    broadcast against the counters)."""
    for _ in range(10):
        hi0, lo0 = _mul_hi_lo(c0, _M0)
        hi1, lo1 = _mul_hi_lo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _LO32, (k1 + _W1) & _LO32
    return c0, c1, c2, c3


def seed_key_torch(seed):
    """(low, high) 32-bit halves of the 64-bit seed as (1,) int64 tensors on the seed's device: split with
    tensor ops, never read on the host (no synchronisation, and legal inside a CUDA-graph capture)."""
    s = seed.reshape(-1)[:1]
    # & keeps the two's-complement low bits of a negative seed; >> is arithmetic, so mask the high half too.
    return s & _LO32, (s >> 32) & _LO32


def keep_mask_torch(numel, seed, p, device):
    """The keep bits of elements 0..numel-1 (bool tensor) for an int64 seed tensor, as every kernel draws them."""
    k0, k1 = seed_key_torch(seed)
    index = torch.arange(numel, dtype=torch.int64, device=device)
    groups = index >> 2
    zero = torch.zeros_like(groups)
    draws = torch.stack(philox4x32_10_torch(groups & _LO32, groups >> 32, zero, zero, k0, k1), 1)
    r = draws.gather(1, (index & 3)[:, None])[:, 0]
    return (r >> 8) >= threshold_and_scale(p)[0]


# ---------------------------------------------------------------------------------------------------
# Layout: the memory order of a dense tensor

def memory_order(x):
    """The permutation of x's dims that makes it contiguous (x is dense in that order), or None."""
    order = sorted(range(x.dim()), key=lambda d: (-x.stride(d), d))
    return order if x.permute(order).is_contiguous() else None


def flat_in_order(t, order):
    """t's elements as a 1-D tensor in the memory order `order` (a view when t is stored that way)."""
    return t.permute(order).reshape(-1)


def from_flat(flat, shape, order):
    """The inverse of flat_in_order: a tensor of `shape` stored in `order`."""
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return flat.view([shape[d] for d in order]).permute(inverse)


def _apply_mask(t_flat, seed, p, backend):
    out = torch.empty_like(t_flat)
    if t_flat.numel() == 0:
        return out
    if backend == "torch":
        threshold, scale = threshold_and_scale(p)
        keep = keep_mask_torch(t_flat.numel(), seed, p, t_flat.device)
        acc = torch.float64 if t_flat.dtype == torch.float64 else torch.float32
        out.copy_(t_flat.to(acc) * (keep.to(acc) * scale))
    elif backend == "triton":
        triton_dropout().dropout(t_flat, out, seed, p)
    else:
        _extension.load().dropout_forward(t_flat, out, seed, *threshold_and_scale(p))
    return out


def _run_forward(x, seed, p, backend):
    order = memory_order(x)
    if order is None:
        x, order = x.contiguous(), list(range(x.dim()))
    return from_flat(_apply_mask(flat_in_order(x, order), seed, p, backend), x.shape, order)


def _run_backward(dy, seed, p, order, backend):
    # The same map from element to index as the forward: dy read in the forward input's memory order.
    return from_flat(_apply_mask(flat_in_order(dy, order).contiguous(), seed, p, backend), dy.shape, order)


def dropout_forward(x: torch.Tensor, seed: torch.Tensor, p: float, backend: str) -> torch.Tensor:
    _backends.check_same_device("dropout_forward", x=x, seed=seed)
    return _run_forward(x, seed, p, BACKENDS.resolve(backend, x, "dropout_forward"))


def _dropout_forward_fake(x, seed, p, backend):
    return torch.empty_like(x) if memory_order(x) is not None else torch.empty(x.shape, dtype=x.dtype,
                                                                               device=x.device)


def dropout_backward(dy: torch.Tensor, seed: torch.Tensor, p: float, order: List[int],
                     backend: str) -> torch.Tensor:
    _backends.check_same_device("dropout_backward", dy=dy, seed=seed)
    return _run_backward(dy, seed, p, order, BACKENDS.resolve(backend, dy, "dropout_backward"))


def _dropout_backward_fake(dy, seed, p, order, backend):
    return from_flat(dy.new_empty(dy.numel()), dy.shape, order)


def _dropout_save(inputs, y, _residuals):
    x, seed, p, backend = inputs
    return (seed,), (p, memory_order(x) or list(range(x.dim())), backend)  # 8 bytes: the mask is regenerated


def _dropout_grads(backward, saved, params, grad_outputs, needs_input_grad):
    return backward(grad_outputs[0], saved[0], *params), None, None, None


# dropout(x, seed, p, backend): dropout with autograd.
dropout = DifferentiableOp("Dropout", dropout_forward, _dropout_forward_fake, dropout_backward,
                           _dropout_backward_fake, _dropout_save, _dropout_grads)


# ---------------------------------------------------------------------------------------------------
# bias + ReLU + dropout on (M, N)

def _bias_relu_forward(x, bias, seed, p, backend):
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    if backend == "torch":
        threshold, scale = threshold_and_scale(p)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        keep = keep_mask_torch(x.numel(), seed, p, x.device).view(x.shape)
        y.copy_(torch.relu(x.to(acc) + bias.to(acc)) * (keep.to(acc) * scale))
    elif backend == "triton":
        triton_dropout().bias_relu_dropout_forward(x, bias, y, seed, p)
    else:
        _extension.load().bias_relu_dropout_forward(x, bias, y, seed, *threshold_and_scale(p))
    return y


def _bias_relu_backward(dy, y, seed, p, backend):
    dy = dy.contiguous()
    dx = torch.empty_like(y)
    N = y.shape[1]
    if y.numel() == 0:
        return dx, torch.zeros(N, dtype=y.dtype, device=y.device)
    if backend == "torch":
        threshold, scale = threshold_and_scale(p)
        acc = torch.float64 if y.dtype == torch.float64 else torch.float32
        keep = keep_mask_torch(y.numel(), seed, p, y.device).view(y.shape)
        passes = keep & ~(y.to(acc) <= 0)  # relu passes where h > 0 or h is NaN (torch's relu backward)
        dpre = torch.where(passes, dy.to(acc) * scale, torch.zeros((), dtype=acc, device=y.device))
        dx.copy_(dpre)
        return dx, dpre.sum(0).to(y.dtype)
    if backend == "triton":
        dbias = triton_dropout().bias_relu_dropout_backward(dy, y, dx, seed, p)
    else:
        dbias = torch.empty(N, dtype=y.dtype, device=y.device)
        _extension.load().bias_relu_dropout_backward(dy, y, dx, dbias, seed, *threshold_and_scale(p))
    return dx, dbias


def bias_relu_dropout_forward(x: torch.Tensor, bias: torch.Tensor, seed: torch.Tensor, p: float,
                              backend: str) -> torch.Tensor:
    _backends.check_same_device("bias_relu_dropout_forward", x=x, bias=bias, seed=seed)
    return _bias_relu_forward(x, bias, seed, p, BACKENDS.resolve(backend, x, "bias_relu_dropout_forward"))


def _bias_relu_forward_fake(x, bias, seed, p, backend):
    return torch.empty_like(x)


def bias_relu_dropout_backward(dy: torch.Tensor, y: torch.Tensor, seed: torch.Tensor, p: float,
                               backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    _backends.check_same_device("bias_relu_dropout_backward", dy=dy, y=y, seed=seed)
    return _bias_relu_backward(dy, y, seed, p, BACKENDS.resolve(backend, y, "bias_relu_dropout_backward"))


def _bias_relu_backward_fake(dy, y, seed, p, backend):
    return torch.empty_like(y), y.new_empty(y.shape[1])


def _bias_relu_save(inputs, y, _residuals):
    x, bias, seed, p, backend = inputs
    return (y, seed), (p, backend)  # the output (ReLU condition) and the seed (mask): no mask saved


def _bias_relu_grads(backward, saved, params, grad_outputs, needs_input_grad):
    dx, dbias = backward(grad_outputs[0], *saved, *params)
    return dx, dbias, None, None, None


# bias_relu_dropout(x, bias, seed, p, backend): dropout(relu(x + bias)) of a row-major (M, N) x with autograd.
bias_relu_dropout = DifferentiableOp(
    "BiasReLUDropout", bias_relu_dropout_forward, _bias_relu_forward_fake, bias_relu_dropout_backward,
    _bias_relu_backward_fake, _bias_relu_save, _bias_relu_grads)
