"""Compiled-code counts of the LRN kernels for sm_90, without a GPU (compiled-code evidence, not measurements).

    python benchmarks/tools/sass_counts.py [--markdown] [--cuda] [--pool] [--json OUT]

Triton kernels: each launcher (triton_kernels/lrn.py) is called on "meta" tensors with the kernels swapped for
recorders (tests/triton_aot.py), so the compile arguments are exactly those of a GPU launch; triton.compile
builds the sm_90 cubin; the cuobjdump that ships with triton disassembles it.  CUDA kernels (--cuda): nvcc
-cubin -arch=sm_90 of csrc/emulate/lrn_sass_probe.cu, which instantiates the kernels of lrn_cuda_kernels.cuh.

Per kernel: static SASS instruction counts -- LDG/STG (global), LDS/STS (shared), SHFL, MUFU, BAR, ALL (every
instruction but NOP) -- with the
bytes each LDG/STG/LDS/STS moves per thread (its width suffix), registers and local-memory (spill) bytes from
`cuobjdump -res-usage`.  For the Triton kernels, whose AlexNet configurations are straight-line code (the
window loops unrolled, one tile per program), the counts times the program's threads over the outputs it
writes give a per-output-element model: bytes requested from L1 / shared memory and MUFU operations per
output.  --pool: the integer divisions (div/rem .s64/.u64 and .32) in the PTX of the pool kernels, CUDA
(csrc/emulate/pool_sass_probe.cu, each index path alone) and Triton.  That model counts masked lanes as active and says nothing about L1/L2 hit rates: DRAM traffic is
the tensors' size times the number of tensors read or written once, whatever the L1 requests.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":  # as a script: this checkout's package and the tests' helpers (an importer sets its own
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]  # path: putting the checkout first here would shadow it)

LRN = (5, 1e-4, 0.75, 2.0)
BATCH = 128
# (label, (C, H, W), dtype, channels_last)
CASES = [("96x55x55 fp32 NCHW", (96, 55, 55), "fp32", False),
         ("96x55x55 fp32 NHWC", (96, 55, 55), "fp32", True),
         ("96x55x55 fp16 NCHW", (96, 55, 55), "fp16", False),
         ("256x27x27 fp32 NCHW", (256, 27, 27), "fp32", False),
         ("256x27x27 fp32 NHWC", (256, 27, 27), "fp32", True)]
CATEGORIES = ("LDG", "STG", "LDS", "STS", "SHFL", "MUFU", "BAR", "LDL", "STL", "ALL")


def cuobjdump():
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else "cuobjdump"


_INSTR = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)", re.M)
_FUNC = re.compile(r"^\s*Function : (\S+)", re.M)


def _width(op):
    """Bytes per thread an LD*/ST* opcode moves (.128 -> 16, .64 -> 8, .U16/.16 -> 2, .U8 -> 1, else 4)."""
    for suffix, nbytes in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if suffix in op:
            return nbytes
    return 4


def sass_counts(cubin_path):
    """{function name: {category: count, category + "_bytes": bytes per thread, "regs", "local"}}."""
    sass = subprocess.run([cuobjdump(), "-sass", cubin_path], capture_output=True, text=True, check=True).stdout
    res = subprocess.run([cuobjdump(), "-res-usage", cubin_path], capture_output=True, text=True,
                         check=True).stdout
    out = {}
    parts = _FUNC.split(sass)
    for name, body in zip(parts[1::2], parts[2::2]):
        c = {k: 0 for k in CATEGORIES}
        c.update({k + "_bytes": 0 for k in ("LDG", "STG", "LDS", "STS")})
        for op in _INSTR.findall(body):
            head = op.split(".")[0]
            if head != "NOP":
                c["ALL"] += 1
            if head in c:
                c[head] += 1
                if head + "_bytes" in c:
                    c[head + "_bytes"] += _width(op)
        out[name] = c
    for m in re.finditer(r"Function (\S+):\s*\n?\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res):
        if m.group(1) in out:
            out[m.group(1)].update(regs=int(m.group(2)), stack=int(m.group(3)), local=int(m.group(5)))
    return out


def triton_jobs():
    """[(kernel label, case label, compile job, outputs per program, threads per program)]."""
    import torch
    import triton_aot as aot
    from alexnet_kernels.triton_kernels import lrn as tk
    jobs = []
    for label, (C, H, W), dname, cl in CASES:
        dt = aot._torch_dtype(dname)
        x = aot._t((BATCH, C, H, W), dt, cl)
        calls = [("forward", lambda: tk.lrn_forward(x, torch.empty_like(x), *LRN, channels_last=cl)),
                 ("backward v2", lambda: tk.lrn_backward(x, torch.empty_like(x), torch.empty_like(x), *LRN,
                                                         channels_last=cl, variant="v2")),
                 ("backward v1", lambda: tk.lrn_backward(x, torch.empty_like(x), torch.empty_like(x), *LRN,
                                                         channels_last=cl, variant="v1"))]
        for kernel_label, call in calls:
            log = []
            with aot.recording(log):
                call()
            (launch,) = log
            (job,) = aot.jobs_of_launch(launch, False)
            job["target"], job["dtype"] = "sm_90", dname
            consts = job["constexprs"]
            halo = consts["PRE"] + consts["POST"]
            rows = consts["BLOCK_C"] - (2 * halo if kernel_label == "backward v2" else 0)
            outputs = min(rows, C) * min(consts["BLOCK_S"], H * W)
            threads = 32 * job["options"].get("num_warps", 4)
            jobs.append((kernel_label, label, job, outputs, threads, consts))
    return jobs


def compile_triton(job, workdir):
    import importlib
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    fn = getattr(importlib.import_module(job["module"]), job["attr"])
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in job["divisible"]}
    k = triton.compile(ASTSource(fn=fn, signature=job["signature"], constexprs=job["constexprs"], attrs=attrs),
                       target=GPUTarget("cuda", 90, 32), options=dict(job["options"]))
    path = os.path.join(workdir, "%s-%d.cubin" % (job["kernel"], abs(hash(json.dumps(job, sort_keys=True,
                                                                                        default=str)))))
    with open(path, "wb") as f:
        f.write(k.asm["cubin"])
    (counts,) = sass_counts(path).values()
    counts["shared_static"] = int(k.metadata.shared)
    return counts


def triton_rows(workdir):
    rows = []
    for kernel_label, case, job, outputs, threads, consts in triton_jobs():
        c = compile_triton(job, workdir)
        per = threads / outputs  # per-thread counts -> per output element
        rows.append(dict(kernel="triton " + kernel_label, case=case,
                         tile="%dx%d w%d" % (consts["BLOCK_C"], consts["BLOCK_S"], threads // 32),
                         outputs=outputs, **c,
                         ldg_B_per_out=round(c["LDG_bytes"] * per, 2), stg_B_per_out=round(c["STG_bytes"] * per, 2),
                         lds_B_per_out=round(c["LDS_bytes"] * per, 2), sts_B_per_out=round(c["STS_bytes"] * per, 2),
                         shfl_per_out=round(c["SHFL"] * per, 2), mufu_per_out=round(c["MUFU"] * per, 2),
                         instr_per_out=round(c["ALL"] * per, 1)))
    return rows


PROBE = os.path.join(ROOT, "csrc", "emulate", "lrn_sass_probe.cu")


def cuda_rows(workdir):
    """Static counts of every kernel in the probe's cubin (loops over tiles, rows and windows: not per element)."""
    cubin = os.path.join(workdir, "lrn_cuda.cubin")
    cmd = ["nvcc", "-cubin", "-arch=sm_90", "-O3", "--use_fast_math", "-ftz=false", "-std=c++17",
           "-I" + os.path.join(ROOT, "csrc"), PROBE, "-o", cubin]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = []
    for name, c in sass_counts(cubin).items():
        pretty = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip() or name
        rows.append(dict(kernel="cuda " + _short(pretty), case="static (loops)", **c))
    return sorted(rows, key=lambda r: r["kernel"])


def _short(name):
    m = re.search(r"(lrn_\w+_kernel)<([\w:]+)>", name)
    if not m:
        return name
    return "%s %s" % (m.group(1), {"float": "fp32", "__half": "fp16"}.get(m.group(2), m.group(2)))


POOL_PROBE = os.path.join(ROOT, "csrc", "emulate", "pool_sass_probe.cu")
_DIV64 = re.compile(r"^\s*(?:@%\w+\s+)?(?:div|rem)\.[su]64\b", re.M)
_DIV32 = re.compile(r"^\s*(?:@%\w+\s+)?(?:div|rem)\.[su]32\b", re.M)


def _divisions_per_entry(ptx):
    """{kernel entry: (64-bit div/rem, 32-bit div/rem)} of a PTX text."""
    out = {}
    parts = re.split(r"^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+(\S+?)\(", ptx, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2]):
        out[name] = (len(_DIV64.findall(body)), len(_DIV32.findall(body)))
    return out


def pool_division_rows(workdir):
    """Integer divisions in the PTX of the pool kernels: CUDA (each index path alone) and Triton."""
    rows = []
    for path in (32, 64):
        ptx_path = os.path.join(workdir, "pool%d.ptx" % path)
        subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-O3", "--use_fast_math", "-ftz=false", "-std=c++17",
                        "-DAK_POOL_INDEX_PATH=%d" % path, "-I" + os.path.join(ROOT, "csrc"), POOL_PROBE,
                        "-o", ptx_path], check=True, capture_output=True, text=True)
        for name, (d64, d32) in _divisions_per_entry(open(ptx_path).read()).items():
            pretty = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip() or name
            m = re.search(r"(\w+_kernel)<", pretty)
            rows.append(dict(kernel="cuda " + (m.group(1) if m else pretty), case="%d-bit index path" % path,
                             div64=d64, div32=d32))
    import triton_aot as aot
    import triton
    import importlib
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from alexnet_kernels.triton_kernels import pool as tp
    x = aot._t((BATCH, 96, 55, 55), aot._torch_dtype("fp32"), False)
    import torch
    y = aot._t((BATCH, 96, 27, 27), x.dtype)
    off = aot._t((BATCH, 96, 27, 27), torch.uint8)
    calls = [("", lambda: tp.max_pool2d_forward(x, y, off, *aot.POOL)),
             ("", lambda: tp.max_pool2d_backward(y, off, torch.empty_like(x), *aot.POOL)),
             (" (FUSED_LRN)", lambda: tp.relu_lrn_max_pool2d_forward(x, y, off, *LRN, *aot.POOL)),
             ("", lambda: tp.relu_lrn_max_pool2d_backward(x, y, off, torch.empty_like(x), *LRN, *aot.POOL))]
    for label, call in calls:
        log = []
        with aot.recording(log):
            call()
        (job,) = aot.jobs_of_launch(log[0], False)
        fn = getattr(importlib.import_module(job["module"]), job["attr"])
        attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in job["divisible"]}
        k = triton.compile(ASTSource(fn=fn, signature=job["signature"], constexprs=job["constexprs"],
                                     attrs=attrs), target=GPUTarget("cuda", 90, 32), options=dict(job["options"]))
        ((d64, d32),) = _divisions_per_entry(k.asm["ptx"]).values()
        rows.append(dict(kernel="triton " + job["kernel"] + label, case="128x96x55x55 fp32 NCHW", div64=d64,
                         div32=d32))
    return rows


def markdown(rows, per_output):
    cols = ["kernel", "case"] + (["tile"] if per_output else []) + \
        ["LDG", "STG", "LDS", "STS", "SHFL", "MUFU", "BAR", "ALL", "regs", "local"] + \
        (["ldg_B_per_out", "stg_B_per_out", "lds_B_per_out", "sts_B_per_out", "shfl_per_out", "mufu_per_out",
          "instr_per_out"]
         if per_output else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--cuda", action="store_true", help="also the CUDA kernels (nvcc -cubin)")
    parser.add_argument("--pool", action="store_true", help="integer divisions in the pool kernels' PTX")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("run with TRITON_INTERPRET unset")
    with tempfile.TemporaryDirectory() as workdir:
        # the pool kernels first: compiling them after the LRN launches were recorded fails in triton 3.8's
        # dependency hashing (a global that cannot be deep-copied), alone they compile
        prows = pool_division_rows(workdir) if args.pool else []
        trows = triton_rows(workdir)
        crows = cuda_rows(workdir) if args.cuda else []
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"triton": trows, "cuda": crows, "pool_divisions": prows}, f, indent=1)
    if args.markdown:
        print(markdown(trows, True))
        if crows:
            print()
            print(markdown(crows, False))
        if prows:
            print()
            print("| kernel | case | 64-bit div/rem | 32-bit div/rem |\n|---|---|---|---|")
            for r in prows:
                print("| %s | %s | %d | %d |" % (r["kernel"], r["case"], r["div64"], r["div32"]))
    else:
        for r in trows + crows:
            print(r)


if __name__ == "__main__":
    main()
