"""The benchmark-only alternative to the max-pool backward's saved offsets: autograd keeps x, and the backward
re-derives each window's arg-max from it (benchmarks/bench_pool.py's ours-triton-recompute measures it against
the package's saved one-byte offsets).  Its forward is the package's Triton forward writing no offsets.

Built on the package's Triton helpers (alexnet_kernels/triton_kernels/pool.py) and launched through its one
launcher (triton_kernels/_launch.py), as every kernel.
"""
import triton
import triton.language as tl

from alexnet_kernels.triton_kernels import pool as _pool
from alexnet_kernels.triton_kernels.pool import (_covering_range, _covering_window, _pool_tile, _tile_offsets,
                                                 _window_argmax)


@triton.jit
def max_pool2d_backward_recompute_kernel(x_ptr, dy_ptr, dx_ptr, C, P, H, W, OH, OW,
                                         sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw, sgn, sgc, sgh, sgw,
                                         KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr,
                                         SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                                         UNROLL: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    # The backward re-scans every covering window of x for its arg-max (x saved instead of one byte per output).
    n, offs_c, ih, iw, mask = _pool_tile(C, P, W, BLOCK_C, BLOCK_P)
    oh_lo, oh_hi = _covering_range(ih, PH, KH, SH, OH)
    ow_lo, ow_hi = _covering_range(iw, PW, KW, SW, OW)
    dy_base = dy_ptr + n * sdn + offs_c.to(tl.int64)[:, None] * sdc
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for i in tl.static_range((KH + SH - 1) // SH):
        for j in tl.static_range((KW + SW - 1) // SW):
            oh, ow, ok, target = _covering_window(i, j, ih, iw, oh_lo, oh_hi, ow_lo, ow_hi, mask,
                                                  KW, SH, SW, PH, PW)
            _, off = _window_argmax(x_ptr, dx_ptr, n, offs_c, ok, oh, ow, H, W, C, sxn, sxc, sxh, sxw,
                                    1.0, 1.0, 1.0, KH, KW, SH, SW, PH, PW, False, 0, 0, True, UNROLL,
                                    BLOCK_C, BLOCK_P)
            g = tl.load(dy_base + (oh.to(tl.int64) * sdh + ow.to(tl.int64) * sdw)[None, :], mask=ok,
                        other=0.0).to(tl.float32)
            acc = tl.where(ok & (off == target), acc + g, acc)
    out = _tile_offsets(n, offs_c, ih, iw, sgn, sgc, sgh, sgw)
    tl.store(dx_ptr + out, acc.to(dx_ptr.dtype.element_ty), mask=mask)


def max_pool2d_backward_recompute(x, dy, dx, kernel_size, stride, padding):
    """Write the input gradient into dx from x and dy, re-deriving each window's arg-max from x."""
    N, C, H, W = x.shape
    OH, OW = dy.shape[2], dy.shape[3]
    if dx.numel() == 0:
        return
    kh, kw = kernel_size
    _pool._launch_tiled(
        max_pool2d_backward_recompute_kernel, dx,
        x, dy, dx, C, H * W, H, W, OH, OW, *x.stride(), *dy.stride(), *dx.stride(),
        **_pool._pool_constants(kernel_size, stride, padding), UNROLL=kh * kw <= _pool.MAX_UNROLLED_POOL)
