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
(no running add/subtract sum, which loses precision when a large value leaves the window).

Forward: the window sums come from shifted loads of the tile; only the first touch of each element
reaches DRAM, the shifted re-loads hit L1/L2.

Backward: lrn_backward picks the kernel by rule, from the window and C (no switch): "v2" while its tile
holds the window's halo, else "v1".  lrn_backward_v2 / lrn_backward_v1 are internal entry points for the
benchmarks and tests that compare the two.

Backward "v2": the tile's rows are BLOCK_C consecutive channels, of which the middle
BLOCK_C - 2 * (PRE + POST) are outputs and the rest the halo their transposed windows need.  The
program loads x and dy once per tile element, forms base_j once for every row (window sums by
shifted adds of the squared tile: tl.gather along the channel axis, which the compiler lowers to
register shuffles or a shared-memory round trip), computes t_j = dy_j * x_j * base_j^(-beta-1) once
per row, sums t over the transposed windows the same way, and writes the output rows of dx once.
Windows too wide for a 128-row tile (PRE + POST > 32) take "v1".

Backward "v1" (the path for very wide windows, and a benchmark provider until a GPU run decides): every output recomputes base_j for each j of its transposed window from shifted loads of x,
(n + 1) * n loads (L1 hits after the first) and n powers per element.
"""
import triton
import triton.language as tl

from ._launch import launch

# Windows longer than this run a rolled loop instead of an unrolled one (compile time).
MAX_UNROLLED_WINDOW = 16


@triton.jit
def lrn_power(base, beta):
    """base^(-beta) for base > 0, in fp32. beta == 0.75 exactly (as the kernel receives it, in fp32: the
    AlexNet, Caffe and torch default) takes 1 / (sqrt(base) * sqrt(sqrt(base))) with IEEE square roots, no
    log/exp; any other beta exp2(-beta * log2(base)). beta is one value per launch: a uniform branch. The
    test is on beta rounded to fp32 as the compiled kernel holds it (the interpreter passes a Python float)."""
    if tl.cast(beta, tl.float32) == 0.75:
        root = tl.sqrt_rn(base)
        scale = 1.0 / (root * tl.sqrt_rn(root))
    else:
        scale = tl.exp2(-beta * tl.log2(base))
    return scale


@triton.jit
def lrn_power_over_base(base, beta):
    """base^(-beta-1) for base > 0, as base^(-beta) / base: the same path as lrn_power, one power."""
    return lrn_power(base, beta) / base


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
def _window_sumsq_centred(x, x_ptrs, offs_c, mask_s, C, stride_c, PRE: tl.constexpr, POST: tl.constexpr,
                          UNROLL: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """_window_sumsq at shift 0 with the centre term x^2 taken from the tile already loaded (x, fp32,
    zero outside [0, C)): one load fewer per element, the same sum in the same order (bit for bit)."""
    acc = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
    if UNROLL:
        for i in tl.static_range(PRE + POST + 1):
            if i == PRE:
                acc += x * x
            else:
                acc += _shifted_square(x_ptrs, offs_c, mask_s, C, stride_c, i - PRE)
    else:
        for i in range(PRE + POST + 1):
            acc += _shifted_square(x_ptrs, offs_c, mask_s, C, stride_c, i - PRE)
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
    return dy_j * x_j * lrn_power_over_base(base_j, beta)


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

    x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    sumsq = _window_sumsq_centred(x, x_ptrs, offs_c, mask_s, C, stride_c, PRE, POST, UNROLL, BLOCK_C, BLOCK_S)
    base = k + alpha_over_n * sumsq
    y = x * lrn_power(base, beta)  # base >= k > 0

    y_ptrs = _tile_pointers(y_ptr, n, offs_c, offs_s, stride_n, stride_c, stride_s)
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def lrn_backward_v1_kernel(x_ptr, dy_ptr, dx_ptr, C, S, stride_n, stride_c, stride_s, alpha_over_n, beta,
                           k, coef, PRE: tl.constexpr, POST: tl.constexpr, UNROLL: tl.constexpr,
                           BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    # "v1": every output recomputes the normalisers of its transposed window. coef = 2 * alpha * beta / n
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
    dx = dy_c * lrn_power(base_c, beta)

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


@triton.jit
def _shift_rows(v, rows, d, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """v[r + d, :] at row r (rows = arange(BLOCK_C)); rows whose r + d falls outside the tile get a row
    of the tile instead (clamped): only halo rows whose results are never stored see them."""
    src = tl.minimum(tl.maximum(rows + d, 0), BLOCK_C - 1)
    return tl.gather(v, tl.broadcast_to(src[:, None], (BLOCK_C, BLOCK_S)), 0)


@triton.jit
def _row_window_sum(v, rows, behind: tl.constexpr, ahead: tl.constexpr, UNROLL: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """sum_{e=-behind..ahead} v[r + e, :] for every row r of the tile, exactly (a fresh sum per row)."""
    acc = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
    if UNROLL:
        for i in tl.static_range(behind + ahead + 1):
            if i == behind:
                acc += v
            else:
                acc += _shift_rows(v, rows, i - behind, BLOCK_C, BLOCK_S)
    else:
        for i in range(behind + ahead + 1):
            acc += _shift_rows(v, rows, i - behind, BLOCK_C, BLOCK_S)
    return acc


@triton.jit
def lrn_backward_kernel(x_ptr, dy_ptr, dx_ptr, C, S, stride_n, stride_c, stride_s, alpha_over_n, beta,
                        k, coef, PRE: tl.constexpr, POST: tl.constexpr, UNROLL: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    # "v2": tile rows r = 0 .. BLOCK_C - 1 are channels c_out0 - HALO + r; rows [HALO, BLOCK_C - HALO)
    # are this program's outputs (OUT_C channels), the rest their halo:
    #   base_j, t_j exact for rows [PRE, BLOCK_C - POST)  (their x window lies in the tile)
    #   tsum_c exact for rows [HALO, BLOCK_C - HALO)       (their transposed t window lies there)
    # coef = 2 * alpha * beta / n
    HALO: tl.constexpr = PRE + POST
    OUT_C: tl.constexpr = BLOCK_C - 2 * HALO
    pid = tl.program_id(0)
    num_c_blocks = tl.cdiv(C, OUT_C)
    num_s_blocks = tl.cdiv(S, BLOCK_S)
    c_block = pid % num_c_blocks  # channel blocks fastest: neighbours share halo rows through L2
    rest = pid // num_c_blocks
    s_block = rest % num_s_blocks
    n = (rest // num_s_blocks).to(tl.int64)
    rows = tl.arange(0, BLOCK_C)
    offs_c = c_block * OUT_C - HALO + rows
    offs_s = s_block * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_s = (offs_s < S)[None, :]
    inside = (offs_c >= 0) & (offs_c < C)
    # The tile's first element in 64 bits, its elements' offsets from there in 32 (the launcher takes v2
    # only where they fit): one register per element instead of a 64-bit pointer per tensor.
    tile0 = (n * stride_n + (c_block.to(tl.int64) * OUT_C - HALO) * stride_c
             + s_block.to(tl.int64) * BLOCK_S * stride_s)
    offs = rows[:, None] * stride_c + tl.arange(0, BLOCK_S)[None, :] * stride_s
    x_ptrs = x_ptr + tile0 + offs
    dy_ptrs = dy_ptr + tile0 + offs

    # One load of x (every row) and dy (the rows whose t is used); zero outside [0, C): the padding.
    x = tl.load(x_ptrs, mask=inside[:, None] & mask_s, other=0.0).to(tl.float32)
    t_rows = inside & (rows >= PRE) & (rows < BLOCK_C - POST)
    dy = tl.load(dy_ptrs, mask=t_rows[:, None] & mask_s, other=0.0).to(tl.float32)

    # base_j once per row: the window W(j) = [j - PRE, j + POST] by shifted adds of the squared tile.
    base = k + alpha_over_n * _row_window_sum(x * x, rows, PRE, POST, UNROLL, BLOCK_C, BLOCK_S)
    scale = lrn_power(base, beta)  # base >= k > 0
    dy_scale = dy * scale
    t = dy * x * (scale / base)  # base^(-beta-1); zero on padding rows (x = 0 there)

    # Transposed window {j : c in W(j)} = [c - POST, c + PRE], the same way.
    tsum = _row_window_sum(t, rows, POST, PRE, UNROLL, BLOCK_C, BLOCK_S)
    dx = dy_scale - coef * x * tsum

    out = inside & (rows >= HALO) & (rows < BLOCK_C - HALO)
    tl.store(dx_ptr + tile0 + offs, dx.to(dx_ptr.dtype.element_ty), mask=out[:, None] & mask_s)


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


# Backward kernels: "v2" forms the normalisers once per tile row, "v1" recomputes them per output.  The
# launcher picks by rule (lrn_backward): v2 while its tile fits the window's halo, else v1's rolled loop.
# v2's tile rows: at most this many, and v2 only while the halo leaves at least half of them outputs.
V2_MAX_ROWS = 128
V2_ELEMENTS = 2048  # tile elements (rows x positions)
V2_WARPS = 8


def _v2_rows(C, halo):
    """v2's tile rows (a power of two) for C channels and a halo of `halo` rows on each side, or None when
    no tile of at most V2_MAX_ROWS rows keeps half its rows outputs.  Chooses the fewest rows computed in
    all (cdiv(C, outputs per tile) * rows), ties to the taller tile (fewer halo re-reads)."""
    best = None
    rows = 1
    while rows <= V2_MAX_ROWS:
        out = rows - 2 * halo
        if out >= max(1, rows // 2) or (out >= 1 and rows >= C + 2 * halo):
            cost = -(-C // out) * rows
            if best is None or cost <= best[0]:
                best = (cost, rows)
        if rows >= C + 2 * halo:
            break
        rows *= 2
    return None if best is None else best[1]


def _v2_config(C, S, halo, channels_last):
    """(rows, positions, warps) of v2's tile, or None (v1 then): no tile fits the halo, or an offset inside
    the tile would pass int32 (the kernel forms them in 32 bits; NCHW planes of about 2**24 positions and
    more).  8 warps, 8 elements of each tensor per thread: 64-95 registers and no spills at AlexNet's
    shapes (4 warps, 16 elements each, took up to 183 in NCHW); benchmarks/results/issue26-triton-evidence.md."""
    rows = _v2_rows(C, halo)
    if rows is None:
        return None
    block_s = min(max(1, V2_ELEMENTS // rows), _next_pow2(S))
    stride_c, stride_s = (1, C) if channels_last else (S, 1)
    if (rows - 1) * stride_c + (block_s - 1) * stride_s >= 2**31:
        return None
    return rows, block_s, V2_WARPS


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
    """Write the input gradient into dx, recomputing the normaliser from x (same layout for all three).
    Kernel by rule: v2 while a tile of at most V2_MAX_ROWS rows keeps half its rows outputs (a halo of up to
    V2_MAX_ROWS // 4 channels per side), else v1's rolled loop (wider windows)."""
    if not lrn_backward_v2(x, dy, dx, size, alpha, beta, k, channels_last):
        lrn_backward_v1(x, dy, dx, size, alpha, beta, k, channels_last)


def _backward_args(size, alpha, beta, k):
    return alpha / size, beta, k, 2.0 * alpha * beta / size


def lrn_backward_v2(x, dy, dx, size, alpha, beta, k, channels_last):
    """The v2 kernel (normalisers once per tile row); False, launching nothing, when its tile cannot hold the
    window's halo.  An internal entry point: the op calls lrn_backward, benchmarks and tests this."""
    N, C = x.shape[0], x.shape[1]
    S = x.numel() // (N * C) if N * C else 0
    if N * C * S == 0:
        return True
    pre, post = min(size // 2, C - 1), min((size - 1) // 2, C - 1)
    cfg = _v2_config(C, S, pre + post, channels_last)
    if cfg is None:
        return False
    rows, block_s, num_warps = cfg
    strides = (C * S, 1, C) if channels_last else (C * S, S, 1)
    grid = (triton.cdiv(C, rows - 2 * (pre + post)) * triton.cdiv(S, block_s) * N,)
    launch(lrn_backward_kernel, grid, x, dy, dx, C, S, *strides, *_backward_args(size, alpha, beta, k),
           PRE=pre, POST=post, UNROLL=(pre + post + 1) <= MAX_UNROLLED_WINDOW,
           BLOCK_C=rows, BLOCK_S=block_s, num_warps=num_warps)
    return True


def lrn_backward_v1(x, dy, dx, size, alpha, beta, k, channels_last):
    """The v1 kernel (normalisers recomputed per output; any window).  An internal entry point, as v2's."""
    _launch(lrn_backward_v1_kernel, (x, dy, dx), x, size, _backward_args(size, alpha, beta, k), channels_last)
