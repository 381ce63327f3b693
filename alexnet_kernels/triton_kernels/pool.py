"""Triton kernels for 2-D max-pooling and the fused ReLU -> LRN -> max-pool block.

Tensors are 4-D (N, C, H, W) with any strides (passed as arguments; Triton specialises a stride of 1, so
the contiguous axis is known at compile time): NCHW, channels_last and strided views all run natively.

Max-pool (PyTorch's semantics, bit-exact values and gradient routing):
    window of output (oh, ow): rows [oh*SH - PH, oh*SH - PH + KH), cols [ow*SW - PW, ... + KW), clipped
    to the input (padding is never selected).  In-window offset of input (ih, iw):
        off = (ih - (oh*SH - PH)) * KW + (iw - (ow*SW - PW))            (one byte: KH*KW <= 256)
    forward:  scan rows then columns; best starts at -inf on the first in-bounds element and moves
              when v > best or v is NaN (ties keep the first maximum, the last NaN wins: torch's rule);
              y = the chosen element, offsets = its in-window offset.
    backward: a gather, no atomics -- dx[ih, iw] = sum over the windows covering (ih, iw), oh then ow
              ascending, of dy[oh, ow] where offsets[oh, ow] points at (ih, iw).  The same order as
              torch's CUDA kernels, so fp32 sums are bit-identical.

Fused block, z = max_pool(LRN(relu(x))) (LRN in PyTorch's convention, see triton_kernels/lrn.py):
    forward:  for each output, the LRN value at each of its window's positions, from the channel
              window of relu(x) (x is read from DRAM once; the re-reads of neighbours hit L1/L2);
              the value is rounded to the storage dtype before the comparison so that routing equals
              the unfused chain's in fp16/bf16.  Writes only z and the one-byte offsets.
    backward: for each input element (c, ih, iw), with r = relu(x):
        dL_j  = the max-pool gather above for channel j at (ih, iw), in fp32
        base_j = k + alpha/n * sum_{i in W(j)} r_i^2,   t_j = dL_j * r_j * base_j^(-beta-1)
        dr_c  = dL_c * base_c^(-beta) - (2 alpha beta / n) * r_c * sum_{j : c in W(j)} t_j
        dx_c  = 0 where x_c <= 0, else dr_c (torch's relu backward, which passes dr_c on at a NaN x_c)
    from x and the offsets alone: nothing LRN-sized is saved or written besides dx.
"""
import triton
import triton.language as tl

from ._launch import launch
from .lrn import MAX_UNROLLED_WINDOW, _tile_ids, lrn_power, lrn_power_over_base

# Pool windows with more elements than this run rolled loops (compile time).
MAX_UNROLLED_POOL = 49


@triton.jit
def _pool_tile(C, P, W, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """(n, channels, rows, columns, mask) of this program's tile of a (N, C, P) iteration space over planes
    of width W: flat position p = row * W + column.

    P, the plane's size (OH * OW or H * W), is the launcher's argument, not a product formed here: the JIT
    passes it as i64 once it reaches 2**31, so the positions are counted in 64 bits exactly then (an int32
    OH * OW went negative and masked the whole plane off)."""
    n, offs_c, offs_p = _tile_ids(C, P, BLOCK_C, BLOCK_P)
    mask = (offs_c < C)[:, None] & (offs_p < P)[None, :]
    return n, offs_c, offs_p // W, offs_p % W, mask


@triton.jit
def _tile_offsets(n, offs_c, h, w, sn, sc, sh, sw):
    # 64-bit offsets of the tile's elements (channels x positions (h, w)) in a tensor of strides sn..sw.
    return n * sn + offs_c.to(tl.int64)[:, None] * sc + (h.to(tl.int64) * sh + w.to(tl.int64) * sw)[None, :]


@triton.jit
def _relu(v):
    # As torch.relu: NaN stays NaN (v < 0 is false for it) and -0 stays -0.
    return tl.where(v < 0, 0.0, v)


@triton.jit
def _lrn_at(x_ptrs, offs_c, valid, C, stride_c, alpha_over_n, beta, k, PRE: tl.constexpr,
            POST: tl.constexpr, UNROLL: tl.constexpr):
    """LRN(relu(x)) at the tile's positions in fp32, and relu(x) there.  x_ptrs point at channel c.

    The window sum is formed in the same order as lrn_forward_kernel (e = -PRE .. POST), so the value
    equals our LRN kernel's on relu(x) bit for bit."""
    sumsq = tl.zeros(x_ptrs.shape, dtype=tl.float32)
    if UNROLL:
        for i in tl.static_range(PRE + POST + 1):
            cc = offs_c + (i - PRE)
            m = valid & ((cc >= 0) & (cc < C))[:, None]
            r = _relu(tl.load(x_ptrs + (i - PRE) * stride_c, mask=m, other=0.0).to(tl.float32))
            sumsq += r * r
    else:
        for i in range(PRE + POST + 1):
            cc = offs_c + (i - PRE)
            m = valid & ((cc >= 0) & (cc < C))[:, None]
            r = _relu(tl.load(x_ptrs + (i - PRE) * stride_c, mask=m, other=0.0).to(tl.float32))
            sumsq += r * r
    r_c = _relu(tl.load(x_ptrs, mask=valid, other=0.0).to(tl.float32))
    base = k + alpha_over_n * sumsq
    return r_c * lrn_power(base, beta), r_c, base


@triton.jit
def _scan_step(best, best_off, v, ok, off):
    # torch's update rule: a strictly greater value, or any NaN (so the last NaN wins).
    take = ok & ((v > best) | (v != v))
    return tl.where(take, v, best), tl.where(take, off, best_off)


@triton.jit
def _window_argmax(x_ptr, y_ptr, n, offs_c, mask, oh, ow, H, W, C, sxn, sxc, sxh, sxw,
                   alpha_over_n, beta, k,
                   KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                   PH: tl.constexpr, PW: tl.constexpr, FUSED_LRN: tl.constexpr,
                   PRE: tl.constexpr, POST: tl.constexpr, UNROLL_LRN: tl.constexpr,
                   UNROLL: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """(max, in-window offset) of every output of the tile; the values pooled are x itself, or
    LRN(relu(x)) rounded to y's dtype when FUSED_LRN (y is only read for its dtype)."""
    hstart = oh * SH - PH
    wstart = ow * SW - PW
    # The first in-bounds element is the starting candidate (torch's initial index).
    best_off = (tl.maximum(-hstart, 0) * KW + tl.maximum(-wstart, 0)).to(tl.int32)
    best_off = tl.broadcast_to(best_off[None, :], (BLOCK_C, BLOCK_P))
    best = tl.full((BLOCK_C, BLOCK_P), float("-inf"), dtype=tl.float32)
    base_ptrs = x_ptr + n * sxn + offs_c.to(tl.int64)[:, None] * sxc
    if UNROLL:
        for kh in tl.static_range(KH):
            for kw in tl.static_range(KW):
                best, best_off = _pool_candidate(base_ptrs, y_ptr, offs_c, mask, hstart + kh, wstart + kw,
                                                 kh * KW + kw, best, best_off, H, W, C, sxh, sxw, sxc,
                                                 alpha_over_n, beta, k, FUSED_LRN, PRE, POST, UNROLL_LRN)
    else:
        for kh in range(KH):
            for kw in range(KW):
                best, best_off = _pool_candidate(base_ptrs, y_ptr, offs_c, mask, hstart + kh, wstart + kw,
                                                 kh * KW + kw, best, best_off, H, W, C, sxh, sxw, sxc,
                                                 alpha_over_n, beta, k, FUSED_LRN, PRE, POST, UNROLL_LRN)
    return best, best_off


@triton.jit
def _pool_candidate(base_ptrs, y_ptr, offs_c, mask, ih, iw, off, best, best_off, H, W, C, sxh, sxw, sxc,
                    alpha_over_n, beta, k, FUSED_LRN: tl.constexpr, PRE: tl.constexpr, POST: tl.constexpr,
                    UNROLL_LRN: tl.constexpr):
    ok = mask & ((ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))[None, :]
    ptrs = base_ptrs + (ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw)[None, :]
    if FUSED_LRN:
        v, _, _ = _lrn_at(ptrs, offs_c, ok, C, sxc, alpha_over_n, beta, k, PRE, POST, UNROLL_LRN)
        v = v.to(y_ptr.dtype.element_ty).to(tl.float32)  # compare what the unfused chain would have stored
    else:
        v = tl.load(ptrs, mask=ok, other=float("-inf")).to(tl.float32)
    return _scan_step(best, best_off, v, ok, off)


@triton.jit
def max_pool2d_forward_kernel(x_ptr, y_ptr, off_ptr, C, P, H, W, OH, OW,
                              sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                              alpha_over_n, beta, k,
                              KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                              PH: tl.constexpr, PW: tl.constexpr, FUSED_LRN: tl.constexpr,
                              PRE: tl.constexpr, POST: tl.constexpr, UNROLL_LRN: tl.constexpr,
                              UNROLL: tl.constexpr, WRITE_OFFSETS: tl.constexpr,
                              BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    # y and the offsets share one layout (strides syn..syw).  alpha_over_n, beta, k, PRE, POST and
    # UNROLL_LRN only matter when FUSED_LRN (the ReLU -> LRN -> pool block).  WRITE_OFFSETS=False writes y
    # only (benchmarks/pool_recompute.py, whose backward recomputes the arg-max from x instead).
    n, offs_c, oh, ow, mask = _pool_tile(C, P, OW, BLOCK_C, BLOCK_P)
    best, best_off = _window_argmax(x_ptr, y_ptr, n, offs_c, mask, oh, ow, H, W, C,
                                    sxn, sxc, sxh, sxw, alpha_over_n, beta, k, KH, KW, SH, SW, PH, PW,
                                    FUSED_LRN, PRE, POST, UNROLL_LRN, UNROLL, BLOCK_C, BLOCK_P)
    out = _tile_offsets(n, offs_c, oh, ow, syn, syc, syh, syw)
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=mask)
    if WRITE_OFFSETS:
        tl.store(off_ptr + out, best_off.to(tl.uint8), mask=mask)


@triton.jit
def _covering_range(i, P, K, S, O):
    """[lo, hi] of the outputs whose window (start o*S - P, length K) covers input index i."""
    first = i + P - K + 1
    lo = tl.where(first > 0, (first + S - 1) // S, 0)  # ceil(first / S), clamped at 0
    hi = tl.minimum((i + P) // S, O - 1)               # i + P >= 0
    return lo, hi


@triton.jit
def _covering_window(i, j, ih, iw, oh_lo, oh_hi, ow_lo, ow_hi, mask, KW: tl.constexpr, SH: tl.constexpr,
                     SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr):
    """Window (oh_lo + i, ow_lo + j) of those covering input (ih, iw) (the _covering_range bounds): (oh, ow),
    whether it is one of them (and in `mask`), and the in-window offset (ih, iw) has in it."""
    oh = oh_lo + i
    ow = ow_lo + j
    ok = mask & ((oh <= oh_hi) & (ow <= ow_hi))[None, :]
    target = ((ih - (oh * SH - PH)) * KW + (iw - (ow * SW - PW)))[None, :]
    return oh, ow, ok, target


@triton.jit
def _routed_gradient(dy_ptr, off_ptr, n, offs_c, mask, ih, iw, OH, OW, sdn, sdc, sdh, sdw,
                     son, soc, soh, sow,
                     KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                     PH: tl.constexpr, PW: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """sum of dy over the windows covering (ih, iw) whose max is (ih, iw), oh then ow ascending, fp32."""
    oh_lo, oh_hi = _covering_range(ih, PH, KH, SH, OH)
    ow_lo, ow_hi = _covering_range(iw, PW, KW, SW, OW)
    c64 = offs_c.to(tl.int64)[:, None]
    dy_base = dy_ptr + n * sdn + c64 * sdc
    off_base = off_ptr + n * son + c64 * soc
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    # At most ceil(K / S) windows cover an index along each axis.
    for i in tl.static_range((KH + SH - 1) // SH):
        for j in tl.static_range((KW + SW - 1) // SW):
            oh, ow, ok, target = _covering_window(i, j, ih, iw, oh_lo, oh_hi, ow_lo, ow_hi, mask,
                                                  KW, SH, SW, PH, PW)
            oh64, ow64 = oh.to(tl.int64), ow.to(tl.int64)
            off = tl.load(off_base + (oh64 * soh + ow64 * sow)[None, :], mask=ok, other=0).to(tl.int32)
            g = tl.load(dy_base + (oh64 * sdh + ow64 * sdw)[None, :], mask=ok, other=0.0).to(tl.float32)
            # A select, not a multiply: dy may hold NaN/Inf in windows that do not route here.
            acc = tl.where(ok & (off == target), acc + g, acc)
    return acc


@triton.jit
def max_pool2d_backward_kernel(dy_ptr, off_ptr, dx_ptr, C, P, H, W, OH, OW,
                               sdn, sdc, sdh, sdw, son, soc, soh, sow, sxn, sxc, sxh, sxw,
                               KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                               PH: tl.constexpr, PW: tl.constexpr,
                               BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    # One program per tile of dx: every element written (zeros included), no atomics.
    n, offs_c, ih, iw, mask = _pool_tile(C, P, W, BLOCK_C, BLOCK_P)
    dx = _routed_gradient(dy_ptr, off_ptr, n, offs_c, mask, ih, iw, OH, OW, sdn, sdc, sdh, sdw,
                          son, soc, soh, sow, KH, KW, SH, SW, PH, PW, BLOCK_C, BLOCK_P)
    out = _tile_offsets(n, offs_c, ih, iw, sxn, sxc, sxh, sxw)
    tl.store(dx_ptr + out, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def relu_lrn_max_pool2d_backward_kernel(x_ptr, dz_ptr, off_ptr, dx_ptr, C, P, H, W, OH, OW,
                                        sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw, son, soc, soh, sow,
                                        sgn, sgc, sgh, sgw, alpha_over_n, beta, k, coef,
                                        KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr,
                                        SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                                        PRE: tl.constexpr, POST: tl.constexpr, UNROLL_LRN: tl.constexpr,
                                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    # coef = 2 * alpha * beta / n; dx strides sg*.
    n, offs_c, ih, iw, mask = _pool_tile(C, P, W, BLOCK_C, BLOCK_P)
    pos = (ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw)[None, :]
    x_ptrs = x_ptr + n * sxn + offs_c.to(tl.int64)[:, None] * sxc + pos

    # First term: dL_c * base_c^(-beta).
    _, r_c, base_c = _lrn_at(x_ptrs, offs_c, mask, C, sxc, alpha_over_n, beta, k, PRE, POST, UNROLL_LRN)
    dl_c = _routed_gradient(dz_ptr, off_ptr, n, offs_c, mask, ih, iw, OH, OW, sdn, sdc, sdh, sdw,
                            son, soc, soh, sow, KH, KW, SH, SW, PH, PW, BLOCK_C, BLOCK_P)
    dr = dl_c * lrn_power(base_c, beta)

    # Second term: r_c * sum over the transposed window j = c + d, d in [-POST, PRE], of
    # t_j = dL_j * r_j * base_j^(-beta-1), everything recomputed from x and the offsets.
    tsum = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    if UNROLL_LRN:
        for i in tl.static_range(PRE + POST + 1):
            tsum += _fused_transposed_term(x_ptrs, dz_ptr, off_ptr, n, offs_c, mask, ih, iw, i - POST, C,
                                           OH, OW, sxc, sdn, sdc, sdh, sdw, son, soc, soh, sow,
                                           alpha_over_n, beta, k, KH, KW, SH, SW, PH, PW, PRE, POST,
                                           UNROLL_LRN, BLOCK_C, BLOCK_P)
    else:
        for i in range(PRE + POST + 1):
            tsum += _fused_transposed_term(x_ptrs, dz_ptr, off_ptr, n, offs_c, mask, ih, iw, i - POST, C,
                                           OH, OW, sxc, sdn, sdc, sdh, sdw, son, soc, soh, sow,
                                           alpha_over_n, beta, k, KH, KW, SH, SW, PH, PW, PRE, POST,
                                           UNROLL_LRN, BLOCK_C, BLOCK_P)
    dr = dr - coef * r_c * tsum

    x_c = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    dx = tl.where(x_c <= 0, 0.0, dr)  # torch's relu backward: zero where x <= 0 (a NaN x passes dr on)
    out = _tile_offsets(n, offs_c, ih, iw, sgn, sgc, sgh, sgw)
    tl.store(dx_ptr + out, dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fused_transposed_term(x_ptrs, dz_ptr, off_ptr, n, offs_c, mask, ih, iw, d, C, OH, OW, sxc,
                           sdn, sdc, sdh, sdw, son, soc, soh, sow, alpha_over_n, beta, k,
                           KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                           PH: tl.constexpr, PW: tl.constexpr, PRE: tl.constexpr, POST: tl.constexpr,
                           UNROLL_LRN: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """t_j = dL_j * r_j * base_j^(-beta-1) at channel j = c + d (zero outside [0, C))."""
    cj = offs_c + d
    mj = mask & ((cj >= 0) & (cj < C))[:, None]
    _, r_j, base_j = _lrn_at(x_ptrs + d * sxc, cj, mj, C, sxc, alpha_over_n, beta, k, PRE, POST, UNROLL_LRN)
    dl_j = _routed_gradient(dz_ptr, off_ptr, n, cj, mj, ih, iw, OH, OW, sdn, sdc, sdh, sdw,
                            son, soc, soh, sow, KH, KW, SH, SW, PH, PW, BLOCK_C, BLOCK_P)
    return tl.where(mj, dl_j * r_j * lrn_power_over_base(base_j, beta), 0.0)


def _next_pow2(v):
    return 1 << max(0, (int(v) - 1).bit_length())


def _config(C, P, channels_contiguous):
    """Tile shape (BLOCK_C, BLOCK_P) and warps: wide along the contiguous axis (not tuned on a GPU yet)."""
    if channels_contiguous:
        block_c = min(_next_pow2(C), 64)
        block_p = min(max(1, 1024 // block_c), _next_pow2(P))
    else:
        block_p = min(_next_pow2(P), 256)
        block_c = min(max(1, 1024 // block_p), 8, _next_pow2(C))
    return block_c, block_p, 4


def _grid(N, C, P, block_c, block_p):
    return (triton.cdiv(C, block_c) * triton.cdiv(P, block_p) * N,)


def _launch_tiled(kernel, tiled, *args, **constants):
    """launch(kernel, grid, *args, **constants) with one program per tile (BLOCK_C channels x BLOCK_P
    positions) of `tiled`, the (N, C, H, W) tensor whose every element the kernel writes (y, or dx)."""
    N, C, H, W = tiled.shape
    block_c, block_p, num_warps = _config(C, H * W, tiled.stride(1) == 1 and C > 1)
    launch(kernel, _grid(N, C, H * W, block_c, block_p), *args, **constants, BLOCK_C=block_c, BLOCK_P=block_p,
           num_warps=num_warps)


def _lrn_constants(size, C):
    # Window offsets beyond C - 1 never reach a channel: clamping keeps huge n cheap.
    pre, post = min(size // 2, C - 1), min((size - 1) // 2, C - 1)
    return dict(PRE=pre, POST=post, UNROLL_LRN=(pre + post + 1) <= MAX_UNROLLED_WINDOW)


def _pool_constants(kernel_size, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    return dict(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw)


def _forward(x, y, offsets, kernel_size, stride, padding, lrn_args):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    if y.numel() == 0:
        return
    assert offsets is None or offsets.stride() == y.stride(), "offsets must share y's layout"
    if lrn_args is None:
        lrn_values, lrn_consts = (1.0, 1.0, 1.0), dict(PRE=0, POST=0, UNROLL_LRN=True)
    else:
        size, alpha, beta, k = lrn_args
        lrn_values, lrn_consts = (alpha / size, beta, k), _lrn_constants(size, C)
    kh, kw = kernel_size
    _launch_tiled(
        max_pool2d_forward_kernel, y,
        x, y, y if offsets is None else offsets, C, OH * OW, H, W, OH, OW, *x.stride(), *y.stride(), *lrn_values,
        **_pool_constants(kernel_size, stride, padding), FUSED_LRN=lrn_args is not None, **lrn_consts,
        UNROLL=kh * kw <= MAX_UNROLLED_POOL, WRITE_OFFSETS=offsets is not None)


def max_pool2d_forward(x, y, offsets, kernel_size, stride, padding):
    """Write max_pool2d(x) into y and the in-window offsets of the maxima into `offsets` (uint8, y's
    layout; None writes none, for benchmarks/pool_recompute.py).  x: (N, C, H, W) with any strides; y: (N, C, OH, OW)."""
    _forward(x, y, offsets, kernel_size, stride, padding, None)


def relu_lrn_max_pool2d_forward(x, z, offsets, size, alpha, beta, k, kernel_size, stride, padding):
    """Write max_pool2d(LRN(relu(x))) into z and the maxima's in-window offsets into `offsets`."""
    _forward(x, z, offsets, kernel_size, stride, padding, (size, alpha, beta, k))


def max_pool2d_backward(dy, offsets, dx, kernel_size, stride, padding):
    """Write the input gradient into dx (every element) from dy and the forward's offsets."""
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    if dx.numel() == 0:
        return
    _launch_tiled(max_pool2d_backward_kernel, dx,
                  dy, offsets, dx, C, H * W, H, W, OH, OW, *dy.stride(), *offsets.stride(), *dx.stride(),
                  **_pool_constants(kernel_size, stride, padding))


def relu_lrn_max_pool2d_backward(x, dz, offsets, dx, size, alpha, beta, k, kernel_size, stride, padding):
    """Write d(loss)/dx of z = max_pool2d(LRN(relu(x))) into dx, from x, dz and the offsets."""
    N, C, H, W = x.shape
    OH, OW = dz.shape[2], dz.shape[3]
    if dx.numel() == 0:
        return
    _launch_tiled(
        relu_lrn_max_pool2d_backward_kernel, dx,
        x, dz, offsets, dx, C, H * W, H, W, OH, OW, *x.stride(), *dz.stride(), *offsets.stride(), *dx.stride(),
        alpha / size, beta, k, 2.0 * alpha * beta / size,
        **_pool_constants(kernel_size, stride, padding), **_lrn_constants(size, C))
