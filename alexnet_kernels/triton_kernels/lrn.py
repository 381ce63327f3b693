"""Triton kernels for cross-channel Local Response Normalization (PyTorch's convention).

The input is viewed as (N, C, S) -- S is the product of the spatial dims -- in one of two layouts:
  NCS (NCHW-contiguous):        strides (C*S, S, 1)
  NSC (channels_last-contiguous): strides (C*S, 1, C)
Both kernels take the strides as arguments; Triton specialises a stride equal to 1, so the contiguous
axis is known at compile time and the loads along it are coalesced.

Math (window W(c) = [c - PRE, c + POST], PRE = n // 2, POST = (n - 1) // 2, zero outside [0, C)):
    base_c = k + (alpha / n) * sum_{j in W(c)} x_j^2
    y_c    = x_c * base_c^(-beta)
    dx_c   = dy_c * base_c^(-beta) - (2 alpha beta / n) * x_c * sum_{j : c in W(j)} dy_j x_j base_j^(-beta-1)
and c in W(j) <=> j in [c - POST, c + PRE] (the transposed window).

Design: each program owns a [BLOCK_C, BLOCK_S] tile of one sample and forms every window sum exactly
(no running add/subtract sum, which loses precision when a large value leaves the window) from
shifted loads of the tile.  Only the first touch of each element reaches DRAM; the shifted re-loads
hit L1/L2.  The backward recomputes base_j for each shift of the transposed window from x, so it
reads x and dy once from DRAM and saves nothing but x from the forward.
"""
import triton
import triton.language as tl

from ._launch import launch

# Windows longer than this run a rolled loop instead of an unrolled one (compile time).
MAX_UNROLLED_WINDOW = 16


@triton.jit
def _tile_pointers(ptr, n, offs_c, offs_s, stride_n, stride_c, stride_s):
    # 64-bit offsets: a tensor may exceed 2**31 elements.
    return (ptr + n * stride_n + offs_c.to(tl.int64)[:, None] * stride_c
            + offs_s.to(tl.int64)[None, :] * stride_s)


@triton.jit
def _shifted_square(x_ptrs, offs_c, mask_s, C, stride_c, d):
    """x[c + d]^2 for every channel c of the tile (zero outside [0, C)), in fp32."""
    cc = offs_c + d
    m = ((cc >= 0) & (cc < C))[:, None] & mask_s
    v = tl.load(x_ptrs + d * stride_c, mask=m, other=0.0).to(tl.float32)
    return v * v


@triton.jit
def _window_sumsq(x_ptrs, offs_c, mask_s, C, stride_c, shift, PRE: tl.constexpr, POST: tl.constexpr,
                  UNROLL: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """sum_{e=-PRE..POST} x[c + shift + e]^2 for every channel c of the tile, in fp32."""
    acc = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
    if UNROLL:
        for i in tl.static_range(PRE + POST + 1):
            acc += _shifted_square(x_ptrs, offs_c, mask_s, C, stride_c, shift + i - PRE)
    else:
        for i in range(PRE + POST + 1):
            acc += _shifted_square(x_ptrs, offs_c, mask_s, C, stride_c, shift + i - PRE)
    return acc


@triton.jit
def _transposed_term(x_ptrs, dy_ptrs, offs_c, mask_s, C, stride_c, d, alpha_over_n, beta, k,
                     PRE: tl.constexpr, POST: tl.constexpr, UNROLL: tl.constexpr, BLOCK_C: tl.constexpr,
                     BLOCK_S: tl.constexpr):
    """t_j = dy_j * x_j * base_j^(-beta-1) at j = c + d, base_j recomputed from x (zero outside [0, C))."""
    cc = offs_c + d
    m = ((cc >= 0) & (cc < C))[:, None] & mask_s
    x_j = tl.load(x_ptrs + d * stride_c, mask=m, other=0.0).to(tl.float32)
    dy_j = tl.load(dy_ptrs + d * stride_c, mask=m, other=0.0).to(tl.float32)
    base_j = k + alpha_over_n * _window_sumsq(x_ptrs, offs_c, mask_s, C, stride_c, d, PRE, POST, UNROLL,
                                              BLOCK_C, BLOCK_S)
    return dy_j * x_j * tl.exp2((-beta - 1.0) * tl.log2(base_j))


@triton.jit
def _tile_ids(C, S, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    # One flat grid axis (axis 0 allows 2**31 - 1 programs); channel blocks vary fastest so the
    # programs sharing a halo run at the same time and the halo re-reads hit L2.
    pid = tl.program_id(0)
    num_c_blocks = tl.cdiv(C, BLOCK_C)
    num_s_blocks = tl.cdiv(S, BLOCK_S)
    c_block = pid % num_c_blocks
    rest = pid // num_c_blocks
    s_block = rest % num_s_blocks
    n = (rest // num_s_blocks).to(tl.int64)
    offs_c = c_block * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_s = s_block * BLOCK_S + tl.arange(0, BLOCK_S)
    return n, offs_c, offs_s


@triton.jit
def lrn_forward_kernel(x_ptr, y_ptr, C, S, stride_n, stride_c, stride_s, alpha_over_n, beta, k,
                       PRE: tl.constexpr, POST: tl.constexpr, UNROLL: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    n, offs_c, offs_s = _tile_ids(C, S, BLOCK_C, BLOCK_S)
    mask_s = (offs_s < S)[None, :]
    mask = (offs_c < C)[:, None] & mask_s
    x_ptrs = _tile_pointers(x_ptr, n, offs_c, offs_s, stride_n, stride_c, stride_s)

    sumsq = _window_sumsq(x_ptrs, offs_c, mask_s, C, stride_c, 0, PRE, POST, UNROLL, BLOCK_C, BLOCK_S)
    x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    base = k + alpha_over_n * sumsq
    y = x * tl.exp2(-beta * tl.log2(base))  # base >= k > 0

    y_ptrs = _tile_pointers(y_ptr, n, offs_c, offs_s, stride_n, stride_c, stride_s)
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def lrn_backward_kernel(x_ptr, dy_ptr, dx_ptr, C, S, stride_n, stride_c, stride_s, alpha_over_n, beta,
                        k, coef, PRE: tl.constexpr, POST: tl.constexpr, UNROLL: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    # coef = 2 * alpha * beta / n
    n, offs_c, offs_s = _tile_ids(C, S, BLOCK_C, BLOCK_S)
    mask_s = (offs_s < S)[None, :]
    mask = (offs_c < C)[:, None] & mask_s
    x_ptrs = _tile_pointers(x_ptr, n, offs_c, offs_s, stride_n, stride_c, stride_s)
    dy_ptrs = _tile_pointers(dy_ptr, n, offs_c, offs_s, stride_n, stride_c, stride_s)

    # First term: dy_c * base_c^(-beta).
    base_c = k + alpha_over_n * _window_sumsq(x_ptrs, offs_c, mask_s, C, stride_c, 0, PRE, POST, UNROLL,
                                              BLOCK_C, BLOCK_S)
    x_c = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    dy_c = tl.load(dy_ptrs, mask=mask, other=0.0).to(tl.float32)
    dx = dy_c * tl.exp2(-beta * tl.log2(base_c))

    # Second term: x_c * sum over the transposed window j = c + d, d in [-POST, PRE], of
    # t_j = dy_j * x_j * base_j^(-beta-1), with base_j recomputed from x.
    tsum = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
    if UNROLL:
        for i in tl.static_range(PRE + POST + 1):
            tsum += _transposed_term(x_ptrs, dy_ptrs, offs_c, mask_s, C, stride_c, i - POST, alpha_over_n,
                                     beta, k, PRE, POST, UNROLL, BLOCK_C, BLOCK_S)
    else:
        for i in range(PRE + POST + 1):
            tsum += _transposed_term(x_ptrs, dy_ptrs, offs_c, mask_s, C, stride_c, i - POST, alpha_over_n,
                                     beta, k, PRE, POST, UNROLL, BLOCK_C, BLOCK_S)
    dx = dx - coef * x_c * tsum

    dx_ptrs = _tile_pointers(dx_ptr, n, offs_c, offs_s, stride_n, stride_c, stride_s)
    tl.store(dx_ptrs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _next_pow2(v):
    return 1 << max(0, (int(v) - 1).bit_length())


def _config(C, S, channels_last):
    """Tile shape and warps per layout (tuned on an H100; see benchmarks/results)."""
    if channels_last:
        # Channels are contiguous: a wide channel tile, few positions.
        block_c = min(_next_pow2(C), 128)
        block_s = max(1, 2048 // block_c)
        block_s = min(block_s, _next_pow2(S))
    else:
        block_s = min(_next_pow2(S), 256)
        block_c = max(1, min(2048 // block_s, 16))
        block_c = min(block_c, _next_pow2(C))
    return block_c, block_s, 4


def _launch(kernel, tensors, x, size, extra_args, channels_last):
    # x is (N, C, *spatial) stored NCS (contiguous) or NSC (channels last); its (N, C, S) strides follow.
    N, C = x.shape[0], x.shape[1]
    S = x.numel() // (N * C) if N * C else 0
    if N * C * S == 0:
        return
    strides = (C * S, 1, C) if channels_last else (C * S, S, 1)
    # Window offsets beyond C - 1 never reach a channel: clamping keeps huge n cheap.
    pre, post = min(size // 2, C - 1), min((size - 1) // 2, C - 1)
    block_c, block_s, num_warps = _config(C, S, channels_last)
    grid = (triton.cdiv(C, block_c) * triton.cdiv(S, block_s) * N,)
    launch(kernel, grid, *tensors, C, S, *strides, *extra_args,
           PRE=pre, POST=post, UNROLL=(pre + post + 1) <= MAX_UNROLLED_WINDOW,
           BLOCK_C=block_c, BLOCK_S=block_s, num_warps=num_warps)


def lrn_forward(x, y, size, alpha, beta, k, channels_last):
    """Write LRN(x) into y: (N, C, *) tensors with the same layout, NCS-contiguous or channels-last."""
    _launch(lrn_forward_kernel, (x, y), x, size, (alpha / size, beta, k), channels_last)


def lrn_backward(x, dy, dx, size, alpha, beta, k, channels_last):
    """Write the input gradient into dx, recomputing the normaliser from x (same layout for all three)."""
    _launch(lrn_backward_kernel, (x, dy, dx), x, size,
            (alpha / size, beta, k, 2.0 * alpha * beta / size), channels_last)
