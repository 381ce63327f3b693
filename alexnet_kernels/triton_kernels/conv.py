"""Triton implicit-GEMM kernels for 2-D convolution + bias + ReLU, forward and backward (dilation 1).

Shapes: x (N, C, H, W), weight (Cout, Cg, KH, KW) with Cg = C / groups, y (N, Cout, OH, OW); group g owns
input channels [g*Cg, (g+1)*Cg) and output channels [g*Og, (g+1)*Og), Og = Cout / groups.  Every kernel
takes the tensors' strides, so any layout works; channels_last is the fast one (channels contiguous).

The reduction index is flattened: k = (kh*KW + kw)*Cg + c, so K = KH*KW*Cg is one dimension.  For conv1
(Cg = 3, 11x11) that gives K = 363 instead of 121 reductions of length 3, which would leave the tensor
cores idle; with channels_last x and weight, consecutive k within one (kh, kw) are contiguous in memory.
When Cg is a multiple of 16 (conv2..5) the JIT's specialisation (channel stride 1, Cg divisible by 16)
lets Triton prove that `k % Cg` runs contiguously in 16s, so the tile loads become 16-byte cp.async copies
pipelined into shared memory and the dot runs on wgmma on sm_90: checked by compiling ahead of time for
sm_90 in tests/test_triton_compile.py.  (A variant ordering the loop (tap, channel block) compiled to the
same loads, so it was not kept.)

    forward  y[p, o]  = relu(b[o] + sum_k  A[p, k] * Wt[k, o])          p = (n, oh, ow): M = N*OH*OW rows
             A[p, k]  = x[n, g*Cg + c, oh*SH - PH + kh, ow*SW - PW + kw]   (0 outside the image)
             Wt[k, o] = w[g*Og + o, c, kh, kw]
    masked   g[p, o]  = dy[p, o] * (y[p, o] > 0)          the ReLU mask from the saved output, on load
    dgrad    dx[q, c] = sum_{(kh, kw, o)} g[(n, oh, ow), o] * w[g*Og + o, c, kh, kw]
                        q = (n, ih, iw), oh = (ih + PH - kh) / SH when that divides exactly and is in range
    wgrad    dw[o, k] = sum_p g[p, o] * A[p, k]        (split over p, partial sums reduced in fixed order)
    bias     db[o]    = sum_p g[p, o]                  (in the same pass as wgrad)

All offsets are 64-bit (tensors may exceed 2**31 elements); pixel indices are int64 when the pixel count
is (the JIT passes M or P >= 2**31 as i64, and the tile index follows its type), int32 below.
Accumulation is fp32; fp32 inputs go through TF32 tensor cores when allowed (INPUT_PRECISION "tf32") and
exact fp32 FMA otherwise ("ieee").
"""
import os

import torch
import triton
import triton.language as tl

from .._backends import triton_interpreting
from ._launch import launch


def _configs(full):
    """Autotune candidates (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages); one small config when interpreting,
    and only the first candidate when $ALEXNET_KERNELS_AUTOTUNE=0 (the test suite sets it: correctness does
    not need the search, whose compiles would take many minutes over all shapes and dtypes)."""
    if triton_interpreting():
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16}, num_warps=4, num_stages=1)]
    if os.environ.get("ALEXNET_KERNELS_AUTOTUNE", "1") == "0":
        full = full[:1]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bm, bn, bk, w, s in full]


# Tile shapes for the GEMM views: M is large (pixels), N is the channel count of one group (32..384).
_GEMM_CONFIGS = [
    (128, 128, 32, 8, 3), (128, 128, 64, 8, 3), (128, 64, 32, 4, 4), (128, 64, 64, 4, 3),
    (64, 128, 32, 4, 4), (64, 64, 64, 4, 3), (128, 32, 32, 4, 4), (256, 64, 32, 8, 3),
    (256, 128, 32, 8, 3), (64, 32, 32, 2, 4),
]
# wgrad: M = output channels of a group, N = K (KH*KW*Cg), long reduction over pixels.
_WGRAD_CONFIGS = [
    (64, 64, 64, 4, 3), (128, 64, 64, 8, 3), (64, 128, 64, 8, 3), (128, 128, 32, 8, 3),
    (32, 64, 64, 4, 3), (64, 32, 64, 4, 3),
]


@triton.jit
def _in_type_of(i, n):
    # i in the integer type of n: int64 exactly when the JIT passed n as i64 (n >= 2**31), so index
    # products stay int32 (cheap divisions) for every smaller tensor.  `+ n * 0`, not n.dtype: an n equal to
    # 1 arrives as a Python constant.
    return i + n * 0


@triton.jit
def _swizzled_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    # Groups of GROUP_M row-tiles walk the column tiles together, so neighbouring programs share the
    # rows of A they read (L2 reuse).
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % rows
    pid_n = (pid % per_group) // rows
    return pid_m, pid_n


@triton.jit
def _unflatten(i, B, C):
    # (a, b, c) of flat indices i = (a*B + b)*C + c: pixels p = (n, h, w), reduction indices k = (kh, kw, c).
    c = i % C
    b = (i // C) % B
    a = (i // C) // B
    return a, b, c


@triton.jit(do_not_specialize=["M_BUCKET"])
def conv2d_relu_forward_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr,
        M, M_BUCKET, H, W, OH, OW, Cg, Og, K,
        sxn, sxc, sxh, sxw, swo, swc, swh, sww, syn, syc, syh, syw,
        SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, KW: tl.constexpr,
        HAS_BIAS: tl.constexpr, INPUT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """y = relu(conv(x, w) + b) for one (BLOCK_M pixels) x (BLOCK_N output channels) tile of group axis 1."""
    pid_m, pid_n = _swizzled_tile(tl.program_id(0), M, Og, BLOCK_M, BLOCK_N, GROUP_M)
    group = tl.program_id(1)

    # Rows: output pixels p = (n, oh, ow) and the top-left input corner of their windows.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n, oh, ow = _unflatten(offs_m, OH, OW)
    ih0 = oh * SH - PH
    iw0 = ow * SW - PW
    x_rows = (n.to(tl.int64) * sxn + ih0.to(tl.int64) * sxh + iw0.to(tl.int64) * sxw
              + (group * Cg).to(tl.int64) * sxc)

    # Columns: output channels of this group.
    offs_o = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_o = offs_o < Og
    w_cols = (group * Og + offs_o).to(tl.int64) * swo

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        kh, kw, c = _unflatten(offs_k, KW, Cg)
        ih = ih0[:, None] + kh[None, :]
        iw = iw0[:, None] + kw[None, :]
        in_image = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_cols = c.to(tl.int64) * sxc + kh.to(tl.int64) * sxh + kw.to(tl.int64) * sxw
        a = tl.load(x_ptr + x_rows[:, None] + x_cols[None, :],
                    mask=mask_m[:, None] & mask_k[None, :] & in_image, other=0.0)
        w_rows = c.to(tl.int64) * swc + kh.to(tl.int64) * swh + kw.to(tl.int64) * sww
        b = tl.load(w_ptr + w_rows[:, None] + w_cols[None, :], mask=mask_k[:, None] & mask_o[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    # Epilogue: bias and ReLU in registers, one store.  `acc < 0` keeps NaN (as torch.relu does).
    if HAS_BIAS:
        bias = tl.load(b_ptr + group * Og + offs_o, mask=mask_o, other=0.0).to(tl.float32)
        acc += bias[None, :]
    acc = tl.where(acc < 0, 0.0, acc)
    y_rows = n.to(tl.int64) * syn + oh.to(tl.int64) * syh + ow.to(tl.int64) * syw
    y_cols = (group * Og + offs_o).to(tl.int64) * syc
    tl.store(y_ptr + y_rows[:, None] + y_cols[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_o[None, :])


@triton.jit(do_not_specialize=["M_BUCKET"])
def conv2d_relu_dgrad_kernel(
        dy_ptr, y_ptr, w_ptr, dx_ptr,
        M, M_BUCKET, H, W, OH, OW, Cg, Og, K,
        sdn, sdc, sdh, sdw, syn, syc, syh, syw, swo, swc, swh, sww, sxn, sxc, sxh, sxw,
        SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, KW: tl.constexpr,
        INPUT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """dx for one (BLOCK_M input pixels) x (BLOCK_N input channels of the group) tile; reduction over
    k = (kh*KW + kw)*Og + o.  The ReLU mask is applied to dy as it is loaded (y > 0)."""
    pid_m, pid_n = _swizzled_tile(tl.program_id(0), M, Cg, BLOCK_M, BLOCK_N, GROUP_M)
    group = tl.program_id(1)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    n, ih, iw = _unflatten(offs_m, H, W)
    n64 = n.to(tl.int64)

    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_c = offs_c < Cg
    w_cols = offs_c.to(tl.int64) * swc  # weight channels are per group

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        kh, kw, o = _unflatten(offs_k, KW, Og)   # k = (kh*KW + kw)*Og + o here
        # The output pixel whose window puts tap (kh, kw) on input pixel (ih, iw), if any.
        oh_s = ih[:, None] + PH - kh[None, :]
        ow_s = iw[:, None] + PW - kw[None, :]
        oh = oh_s // SH
        ow = ow_s // SW
        hit = ((oh_s >= 0) & (ow_s >= 0) & (oh * SH == oh_s) & (ow * SW == ow_s) & (oh < OH) & (ow < OW)
               & mask_m[:, None] & mask_k[None, :])
        oo = (group * Og + o).to(tl.int64)
        g_off = n64[:, None] * sdn + oh.to(tl.int64) * sdh + ow.to(tl.int64) * sdw + oo[None, :] * sdc
        y_off = n64[:, None] * syn + oh.to(tl.int64) * syh + ow.to(tl.int64) * syw + oo[None, :] * syc
        dy = tl.load(dy_ptr + g_off, mask=hit, other=0.0)
        yv = tl.load(y_ptr + y_off, mask=hit, other=0.0)
        a = tl.where(yv > 0, dy, tl.zeros_like(dy))
        w_rows = oo * swo + kh.to(tl.int64) * swh + kw.to(tl.int64) * sww
        b = tl.load(w_ptr + w_rows[:, None] + w_cols[None, :], mask=mask_k[:, None] & mask_c[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    x_rows = n64 * sxn + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
    x_cols = (group * Cg + offs_c).to(tl.int64) * sxc
    tl.store(dx_ptr + x_rows[:, None] + x_cols[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_c[None, :])


@triton.jit(do_not_specialize=["P_BUCKET"])
def conv2d_relu_wgrad_kernel(
        dy_ptr, y_ptr, x_ptr, dw_part_ptr, db_part_ptr,
        P, P_BUCKET, H, W, OH, OW, Cg, Og, K, Cout, P_PER_SPLIT, groups,
        sdn, sdc, sdh, sdw, syn, syc, syh, syw, sxn, sxc, sxh, sxw,
        SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, KW: tl.constexpr,
        INPUT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """Partial dw[o, k] and db[o] over the pixel range of split axis-2 // groups, for one
    (BLOCK_M output channels) x (BLOCK_N of k) tile.  dw_part: (splits, Cout, K) fp32, db_part: (splits, Cout)."""
    pid_m, pid_n = _swizzled_tile(tl.program_id(0), Og, K, BLOCK_M, BLOCK_N, GROUP_M)
    split = tl.program_id(2) // groups
    group = tl.program_id(2) % groups

    offs_o = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_o = offs_o < Og
    oo = (group * Og + offs_o).to(tl.int64)
    offs_k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_k = offs_k < K
    kh, kw, c = _unflatten(offs_k, KW, Cg)
    x_cols = (group * Cg + c).to(tl.int64) * sxc + kh.to(tl.int64) * sxh + kw.to(tl.int64) * sxw

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    db = tl.zeros((BLOCK_M,), dtype=tl.float32)
    p_start = _in_type_of(split, P) * P_PER_SPLIT  # int32 products overflow once P >= 2**31
    p_end = tl.minimum(p_start + P_PER_SPLIT, P)
    for p0 in range(p_start, p_end, BLOCK_K):
        offs_p = p0 + tl.arange(0, BLOCK_K)
        mask_p = offs_p < p_end
        n, oh, ow = _unflatten(offs_p, OH, OW)
        n64 = n.to(tl.int64)
        # g^T tile [BLOCK_M channels, BLOCK_K pixels]: masked by the saved ReLU output.
        g_off = oo[:, None] * sdc + (n64 * sdn + oh.to(tl.int64) * sdh + ow.to(tl.int64) * sdw)[None, :]
        y_off = oo[:, None] * syc + (n64 * syn + oh.to(tl.int64) * syh + ow.to(tl.int64) * syw)[None, :]
        m2 = mask_o[:, None] & mask_p[None, :]
        dy = tl.load(dy_ptr + g_off, mask=m2, other=0.0)
        yv = tl.load(y_ptr + y_off, mask=m2, other=0.0)
        a = tl.where(yv > 0, dy, tl.zeros_like(dy))
        db += tl.sum(a.to(tl.float32), axis=1)
        # A tile [BLOCK_K pixels, BLOCK_N of k]: the forward's im2col rows for these pixels.
        ih = (oh * SH - PH)[:, None] + kh[None, :]
        iw = (ow * SW - PW)[:, None] + kw[None, :]
        in_image = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_off = (n64 * sxn + (oh * SH - PH).to(tl.int64) * sxh + (ow * SW - PW).to(tl.int64) * sxw)[:, None] \
            + x_cols[None, :]
        b = tl.load(x_ptr + x_off, mask=mask_p[:, None] & mask_k[None, :] & in_image, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    part = split.to(tl.int64) * Cout
    tl.store(dw_part_ptr + (part + oo)[:, None] * K + offs_k[None, :], acc,
             mask=mask_o[:, None] & mask_k[None, :])
    if pid_n == 0:
        tl.store(db_part_ptr + part + oo, db, mask=mask_o)


@triton.jit
def relu_mask_bias_grad_kernel(dy_ptr, y_ptr, g_ptr, db_part_ptr, P, C, OHW,
                               sdn, sdc, sds, syn, syc, sys, sgn, sgc, sgs,
                               BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """g = dy * (y > 0) and per-channel partial sums of g (the bias gradient) in the same pass; for the
    backward that hands dgrad/wgrad to cuDNN.  Pixels p = (n, s) with s the flat spatial index."""
    pid_p = tl.program_id(0)
    offs_p = _in_type_of(pid_p, P) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (offs_p < P)[:, None] & (offs_c < C)[None, :]
    n = (offs_p // OHW).to(tl.int64)
    s = (offs_p % OHW).to(tl.int64)
    cc = offs_c.to(tl.int64)
    dy = tl.load(dy_ptr + (n * sdn + s * sds)[:, None] + cc[None, :] * sdc, mask=mask, other=0.0)
    yv = tl.load(y_ptr + (n * syn + s * sys)[:, None] + cc[None, :] * syc, mask=mask, other=0.0)
    g = tl.where(yv > 0, dy, tl.zeros_like(dy))
    tl.store(g_ptr + (n * sgn + s * sgs)[:, None] + cc[None, :] * sgc, g, mask=mask)
    tl.store(db_part_ptr + pid_p.to(tl.int64) * C + offs_c, tl.sum(g.to(tl.float32), axis=0), mask=offs_c < C)


# Autotune keys.  The pixel count N*OH*OW enters only as M_BUCKET / P_BUCKET (its next power of two, an
# argument the kernels do not read), so a new batch size -- the last partial batch, evaluation -- reuses the
# tuned configuration of its bucket instead of re-tuning in the middle of training.  The rest of the key is
# everything that makes a different kernel or GEMM shape: the channel and reduction sizes, the output size,
# the window constants, and the layouts, as the channel strides (1 for channels_last; they do not depend on
# the batch).  Triton's Autotuner adds the dtypes of the tensor arguments.
_WINDOW = ["KW", "SH", "SW", "PH", "PW"]
_forward = triton.autotune(
    configs=_configs(_GEMM_CONFIGS),
    key=["M_BUCKET", "Og", "K", "Cg", "OH", "OW"] + _WINDOW + ["HAS_BIAS", "syc", "INPUT_PRECISION"])(
    conv2d_relu_forward_kernel)
_dgrad = triton.autotune(
    configs=_configs(_GEMM_CONFIGS),
    key=["M_BUCKET", "Cg", "K", "Og", "H", "W", "OH", "OW"] + _WINDOW + ["sdc", "syc", "sxc", "INPUT_PRECISION"])(
    conv2d_relu_dgrad_kernel)
_wgrad = triton.autotune(
    configs=_configs(_WGRAD_CONFIGS),
    key=["P_BUCKET", "Og", "K", "Cg", "OH", "OW", "groups"] + _WINDOW + ["sdc", "syc", "INPUT_PRECISION"])(
    conv2d_relu_wgrad_kernel)


def tuning_bucket(pixels):
    """The autotune keys' stand-in for a pixel count: its next power of two."""
    return triton.next_power_of_2(max(int(pixels), 1))

GROUP_M = 8


def _precision(x, allow_tf32):
    """Exact fp32 ("ieee") only for fp32 with TF32 off; for fp16/bf16 the value is unused ("tf32" is the default)."""
    return "ieee" if (x.dtype == torch.float32 and not allow_tf32) else "tf32"


def _geometry(x, w, y, groups):
    N, C, H, W = x.shape
    Cout, Cg, KH, KW = w.shape
    return N, H, W, y.shape[2], y.shape[3], Cg, Cout // groups, KH * KW * Cg, KW


def conv2d_relu_forward(x, w, b, y, stride, padding, groups, allow_tf32):
    """Write relu(conv2d(x, w, b)) into y (preallocated, any strides)."""
    N, H, W, OH, OW, Cg, Og, K, KW = _geometry(x, w, y, groups)
    M = N * OH * OW

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(Og, meta["BLOCK_N"]), groups)

    launch(_forward, grid, x, w, b if b is not None else y, y, M, tuning_bucket(M), H, W, OH, OW, Cg, Og, K,
           *x.stride(), *w.stride(), *y.stride(),
           SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], KW=KW,
           HAS_BIAS=b is not None, INPUT_PRECISION=_precision(x, allow_tf32), GROUP_M=GROUP_M)
    return y


def conv2d_relu_dgrad(dy, y, w, dx, stride, padding, groups, allow_tf32):
    """Write d(x) into dx (preallocated with x's shape) from dy and the saved ReLU output y."""
    N, H, W, OH, OW, Cg, Og, _, KW = _geometry(dx, w, y, groups)
    M = N * H * W
    K = w.shape[2] * KW * Og

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(Cg, meta["BLOCK_N"]), groups)

    launch(_dgrad, grid, dy, y, w, dx, M, tuning_bucket(M), H, W, OH, OW, Cg, Og, K,
           *dy.stride(), *y.stride(), *w.stride(), *dx.stride(),
           SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], KW=KW,
           INPUT_PRECISION=_precision(dx, allow_tf32), GROUP_M=GROUP_M)
    return dx


def _num_splits(P, tiles, device):
    """Split the pixel reduction of wgrad so that about two programs per SM are busy."""
    if triton_interpreting() or device.type != "cuda":
        return max(1, min(4, triton.cdiv(P, 64)))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(2 * sms, max(tiles, 1)), triton.cdiv(P, 1024)))


def conv2d_relu_wgrad(dy, y, x, w_shape, stride, padding, groups, allow_tf32):
    """(dw, db) in fp32 from dy, the saved ReLU output y and x: dw has w_shape with channels_last
    strides ((Cout, KH, KW, Cg) storage), db has Cout elements.  Partial sums over pixel splits are
    reduced in a fixed order (deterministic)."""
    N, C, H, W = x.shape
    Cout, Cg, KH, KW = w_shape
    OH, OW = y.shape[2], y.shape[3]
    Og = Cout // groups
    K = KH * KW * Cg
    P = N * OH * OW
    splits = _num_splits(P, triton.cdiv(Og, 64) * triton.cdiv(K, 64) * groups, x.device)
    p_per_split = triton.cdiv(triton.cdiv(P, splits), 64) * 64
    splits = triton.cdiv(P, p_per_split)
    dw_part = torch.empty((splits, Cout, K), device=x.device, dtype=torch.float32)
    db_part = torch.empty((splits, Cout), device=x.device, dtype=torch.float32)

    def grid(meta):
        return (triton.cdiv(Og, meta["BLOCK_M"]) * triton.cdiv(K, meta["BLOCK_N"]), 1, splits * groups)

    launch(_wgrad, grid, dy, y, x, dw_part, db_part, P, tuning_bucket(P), H, W, OH, OW, Cg, Og, K, Cout,
           p_per_split, groups, *dy.stride(), *y.stride(), *x.stride(),
           SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], KW=KW,
           INPUT_PRECISION=_precision(x, allow_tf32), GROUP_M=GROUP_M)
    dw = dw_part.sum(0) if splits > 1 else dw_part[0]
    db = db_part.sum(0) if splits > 1 else db_part[0]
    return dw.view(Cout, KH, KW, Cg).permute(0, 3, 1, 2), db


def relu_mask_bias_grad(dy, y, g):
    """g = dy * (y > 0) written into g (y's shape, any strides); returns d(bias) (fp32, one per channel)."""
    N, C, OH, OW = y.shape
    P = N * OH * OW
    BLOCK_P, BLOCK_C = (32, 32) if triton_interpreting() else (64, 64)
    n_p = triton.cdiv(P, BLOCK_P)
    db_part = torch.empty((n_p, C), device=y.device, dtype=torch.float32)

    def spatial(t):  # (n, c, s) strides; s = oh*OW + ow is valid for NCHW and channels_last alike
        return t.stride(0), t.stride(1), t.stride(3)

    if g.stride(2) != OW * g.stride(3) or y.stride(2) != OW * y.stride(3):
        raise ValueError("relu_mask_bias_grad: y and g must have mergeable spatial dims (NCHW or channels_last)")
    if dy.stride(2) != OW * dy.stride(3):  # an unusual view of the incoming gradient: one copy
        dy = torch.empty_like(y).copy_(dy)
    launch(relu_mask_bias_grad_kernel, (n_p, triton.cdiv(C, BLOCK_C)),
           dy, y, g, db_part, P, C, OH * OW, *spatial(dy), *spatial(y), *spatial(g),
           BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)
    return db_part.sum(0)
