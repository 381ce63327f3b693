"""Compiled-code counts of the Triton LRN backward (v2) and the bytes the Triton bias + ReLU + dropout backward
moves, at AlexNet's shapes, without a GPU (compiled-code evidence and a traffic model, not measurements).

    python benchmarks/tools/triton_backward_counts.py [--root CHECKOUT] [--lrn] [--dropout] [--json OUT]

--root: the checkout whose alexnet_kernels (and tests/triton_aot.py) are examined (default: this one), so one
run on an older commit gives the "before" columns.

--lrn: the launcher (triton_kernels/lrn.py lrn_backward, its default rule) is called on "meta" tensors with the
kernels swapped for recorders (tests/triton_aot.py), so the compile arguments are exactly a GPU launch's;
triton.compile builds the sm_90 cubin; ptxas's log gives the spill bytes (stores/loads) and triton's bundled
cuobjdump the registers, local-memory bytes and static SASS counts (sass_counts.py; per thread).  "blocks/SM" and "warps/SM" are what the registers and the
static shared memory allow on sm_90 (65536 registers, allocated per warp in units of 256; 64 warps, 32
blocks, 228 KiB of shared memory with 1 KiB reserved per block).

--dropout: bytes from the recorded launch's parameters: dy and y read and dx written once (3 M N element
bytes), the d(bias) scratch (grid rows x N fp32) written by the kernel and read by partial.sum(0), whose fp32
result (N) is written, then read and written as the dtype by .to() (nothing for fp32).  Minimum: 3 M N + N
element bytes.  The kernel's sm_90 registers, spills and static LDG/STG counts per thread come with it.
"""
import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.dirname(os.path.dirname(HERE))

LRN = (5, 1e-4, 0.75, 2.0)
BATCH = 128
# (C, H, W) the LRNs see: the whole 96/256-channel layer and one tower's 48/128 (alexnet/model.py)
LRN_SHAPES = [(96, 55, 55), (256, 27, 27), (48, 55, 55), (128, 27, 27)]
DTYPES = ("fp32", "fp16", "bf16")
# (M, N) of the fc layers' bias + ReLU + dropout: batch 128 (whole layer, one tower, fc6's input width)
# and a large batch
DROPOUT_SHAPES = [(8192, 4096), (128, 4096), (128, 2048), (128, 9216)]
SM90_REGS, SM90_WARPS, SM90_BLOCKS, SM90_SHARED = 65536, 64, 32, 228 * 1024


def _setup(root):
    sys.path.insert(0, HERE)
    sys.path[:0] = [root, os.path.join(root, "tests")]  # the package and triton_aot of the checkout measured


def resident(regs, warps, shared):
    """(blocks, warps) per sm_90 SM that registers, warps, blocks and shared memory allow."""
    per_warp = -(-regs * 32 // 256) * 256
    blocks = min(SM90_BLOCKS, SM90_WARPS // warps, SM90_REGS // (per_warp * warps),
                 SM90_SHARED // (shared + 1024))
    return blocks, blocks * warps


_COMPILED = {}


def compile_counts(job, workdir):
    """sass_counts.compile_triton's counts plus ptxas's spill bytes (stores, loads) from its log; a job
    compiled before (shapes that share a specialisation) is not compiled again: triton's cache would skip
    ptxas and its log."""
    key = json.dumps(job, sort_keys=True, default=str)
    if key not in _COMPILED:
        _COMPILED[key] = _compile_counts(job, workdir)
    return dict(_COMPILED[key])


def _compile_counts(job, workdir):
    import contextlib
    import io
    import re
    import sass_counts as sc
    from triton import knobs
    knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        c = sc.compile_triton(job, workdir)
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log.getvalue())
    c["spill_stores"], c["spill_loads"] = (int(m.group(1)), int(m.group(2))) if m else (-1, -1)
    return c


def lrn_rows(workdir):
    import torch
    import triton_aot as aot
    import sass_counts as sc
    from alexnet_kernels.triton_kernels import lrn as tk
    rows = []
    for C, H, W in LRN_SHAPES:
        for dname in DTYPES:
            for cl in (False, True):
                x = aot._t((BATCH, C, H, W), aot._torch_dtype(dname), cl)
                log = []
                with aot.recording(log):
                    tk.lrn_backward(x, torch.empty_like(x), torch.empty_like(x), *LRN, channels_last=cl)
                (launch,) = log
                assert launch[1] == "lrn_backward_kernel", launch[1]
                (job,) = aot.jobs_of_launch(launch, False)
                c = compile_counts(job, workdir)
                k, warps = job["constexprs"], job["options"].get("num_warps", 4)
                blocks, warps_sm = resident(c["regs"], warps, c["shared_static"])
                rows.append(dict(shape="%dx%dx%d" % (C, H, W), dtype=dname, layout="NHWC" if cl else "NCHW",
                                 tile="%dx%d" % (k["BLOCK_C"], k["BLOCK_S"]), warps=warps, regs=c["regs"],
                                 local=c["local"], spill="%d/%d" % (c["spill_stores"], c["spill_loads"]), LDG=c["LDG"], STG=c["STG"], LDS=c["LDS"], STS=c["STS"],
                                 SHFL=c["SHFL"], BAR=c["BAR"], shared=c["shared_static"],
                                 # bytes per program the LDG/STG request (per-thread widths x threads) against
                                 # the tile's x and dy (loaded once) and dx (its output rows stored)
                                 ldg_B_program=c["LDG_bytes"] * 32 * warps,
                                 tile_x_dy_B=2 * k["BLOCK_C"] * k["BLOCK_S"] * x.element_size(),
                                 stg_B_program=c["STG_bytes"] * 32 * warps, blocks_sm=blocks,
                                 warps_sm=warps_sm, elements_sm=blocks * k["BLOCK_C"] * k["BLOCK_S"]))
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def dropout_rows(workdir):
    import torch
    import triton_aot as aot
    from alexnet_kernels.triton_kernels import dropout as td
    rows = []
    for M, N in DROPOUT_SHAPES:
        for dname in ("bf16", "fp32"):
            dt = aot._torch_dtype(dname)
            seed, dy = aot._t((1,), torch.int64), aot._t((M, N), dt)
            log = []
            with aot.recording(log):
                td.bias_relu_dropout_backward(dy, torch.empty_like(dy), torch.empty_like(dy), seed, 0.5)
            (launch,) = log
            args, kwargs = launch[3], launch[4]
            partial = args[3]
            e = dy.element_size()
            main = 3 * M * N * e
            scratch = partial.numel() * 4
            second = scratch + N * 4 + (N * 4 + N * e if e != 4 else 0)  # sum: read + write; .to(): read + write
            moved = main + scratch + second
            minimum = main + N * e
            rows_per_program = kwargs["BLOCK_M"] * kwargs.get("ROW_STEPS", 1)
            (job,) = aot.jobs_of_launch(launch, False)
            c = compile_counts(job, workdir)
            rows.append(dict(shape="%dx%d" % (M, N), dtype=dname, block="%dx%d" % (kwargs["BLOCK_M"],
                                                                                 4 * kwargs["BLOCK_Q"]),
                             rows_per_program=rows_per_program, programs=-(-M // rows_per_program) * -(-N // (4 * kwargs["BLOCK_Q"])),
                             scratch_rows=partial.shape[0], scratch_bytes=scratch, moved=moved, minimum=minimum,
                             over=round(100.0 * (moved - minimum) / minimum, 2), regs=c["regs"],
                             spill="%d/%d" % (c["spill_stores"], c["spill_loads"]), LDG=c["LDG"], STG=c["STG"]))
    return rows


def markdown(rows):
    cols = list(rows[0])
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT)
    parser.add_argument("--lrn", action="store_true")
    parser.add_argument("--dropout", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("run with TRITON_INTERPRET unset")
    cache = tempfile.TemporaryDirectory()
    os.environ["TRITON_CACHE_DIR"] = cache.name  # cold: ptxas runs (and logs its spills) for every kernel
    _setup(os.path.abspath(args.root))
    out = {}
    with tempfile.TemporaryDirectory() as workdir:
        if args.dropout:
            out["dropout"] = dropout_rows(workdir)
            print(markdown(out["dropout"]) + "\n")
        if args.lrn:
            out["lrn"] = lrn_rows(workdir)
            print(markdown(out["lrn"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
