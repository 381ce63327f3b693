"""Sweep the Triton LRN kernels' tile shapes on a GPU (not part of the pytest suite).

    python benchmarks/tools/tune_lrn_triton.py [--quick]

Prints, per (shape, dtype, layout, direction), the best configurations with ms and GB/s (minimal traffic:
forward reads x and writes y, backward reads x, dy and writes dx); bwd is the v2 kernel, bwd-v1 the old one."""
import itertools
import sys

import torch
import triton
import triton.testing

from alexnet_kernels.triton_kernels import lrn as tk

SHAPES = [(128, 96, 55, 55), (128, 256, 27, 27), (128, 96, 27, 27), (128, 256, 13, 13)]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def launch(kernel, tensors, x3, extra, block_c, block_s, warps, size=5):
    N, C, S = x3.shape
    pre, post = min(size // 2, C - 1), min((size - 1) // 2, C - 1)
    # the v2 backward's tiles have BLOCK_C rows of which BLOCK_C - 2 * halo are outputs
    out_c = block_c - 2 * (pre + post) if kernel is tk.lrn_backward_kernel else block_c
    grid = (triton.cdiv(C, out_c) * triton.cdiv(S, block_s) * N,)
    kernel[grid](*tensors, C, S, x3.stride(0), x3.stride(1), x3.stride(2), *extra, PRE=pre, POST=post,
                 UNROLL=True, BLOCK_C=block_c, BLOCK_S=block_s, num_warps=warps)


def main(quick):
    copy_src = torch.empty(2**28, device="cuda")
    copy_dst = torch.empty_like(copy_src)
    copy_ms = triton.testing.do_bench(lambda: copy_dst.copy_(copy_src), return_mode="median")
    copy_gbs = 2 * copy_src.nbytes / copy_ms / 1e6
    print("copy bandwidth %.0f GB/s" % copy_gbs)
    del copy_src, copy_dst
    blocks_c = [4, 8, 16, 32, 64, 128]
    blocks_s = [8, 16, 32, 64, 128, 256, 512]
    dtypes = list(DTYPES.items())[:2] if quick else DTYPES.items()
    for shape, (dname, dtype), cl in itertools.product(SHAPES[:2] if quick else SHAPES, dtypes,
                                                       (False, True)):
        N, C, H, W = shape
        S = H * W
        x3 = (torch.randn(N, S, C, device="cuda", dtype=dtype).transpose(1, 2) if cl
              else torch.randn(N, C, S, device="cuda", dtype=dtype))
        dy3 = torch.randn_like(x3)
        out = torch.empty_like(x3)
        for direction in ("fwd", "bwd", "bwd-v1"):
            results = []
            for bc, bs, warps in itertools.product(blocks_c, blocks_s, (4, 8)):
                if not 1024 <= bc * bs <= 4096 or bc > triton.next_power_of_2(C) or (warps == 8 and bc * bs < 4096):
                    continue
                if direction == "bwd" and bc < 16:  # v2: rows must exceed the halo (8 rows at n = 5)
                    continue
                if direction == "fwd":
                    fn = lambda: launch(tk.lrn_forward_kernel, (x3, out), x3, (1e-4 / 5, 0.75, 2.0), bc, bs, warps)  # noqa
                    nbytes = 2 * x3.nbytes
                else:
                    kernel = tk.lrn_backward_kernel if direction == "bwd" else tk.lrn_backward_v1_kernel
                    fn = lambda: launch(kernel, (x3, dy3, out), x3,  # noqa
                                        (1e-4 / 5, 0.75, 2.0, 2 * 1e-4 * 0.75 / 5), bc, bs, warps)
                    nbytes = 3 * x3.nbytes
                try:
                    ms = triton.testing.do_bench(fn, warmup=5, rep=20, return_mode="median")
                except Exception as exc:  # out of resources etc.
                    print("  skip", bc, bs, warps, type(exc).__name__)
                    continue
                results.append((ms, bc, bs, warps, nbytes / ms / 1e6))
            results.sort()
            cur = tk._v2_config(C, S, 4, cl) if direction == "bwd" else tk._config(C, S, cl)
            cur_ms = [r for r in results if r[1:4] == cur]
            print("%-14s %s %-5s %s  best: %s   current %s: %s" % (
                "x".join(map(str, shape)), dname, "NHWC" if cl else "NCHW", direction,
                "  ".join("%.3fms(%dx%d,w%d,%.0fGB/s)" % r for r in results[:3]), cur,
                "%.3fms" % cur_ms[0][0] if cur_ms else "n/a"))
            sys.stdout.flush()


if __name__ == "__main__":
    main("--quick" in sys.argv)
