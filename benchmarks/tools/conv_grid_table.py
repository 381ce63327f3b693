"""Grid sizes of the CUDA C++ convolution's kernels at AlexNet's five layers on a given GPU, computed without one.

Computed, not measured: csrc/conv.h's own plan functions (plan_conv, plan_conv_dgrad, plan_conv_wgrad,
conv_wgrad_splits), compiled with g++ from csrc/emulate/conv_plan_probe.cpp and called through ctypes, on a device
described by its multiprocessor count, its opt-in shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin)
and the wgrad kernel's residency (blocks per multiprocessor).  On a GPU the launcher takes the residency from
cudaOccupancyMaxActiveBlocksPerMultiprocessor; here it comes from the occupancy rules (registers, threads, shared
memory per multiprocessor) with each kernel's registers read from the built library's SASS (cuobjdump -res-usage).

"Before" is the plan of commit 3c04327: the tile chosen without the shared-memory limit and the wgrad's splits from
ops/conv.py's formula for 64x64 tiles (about two blocks per multiprocessor of 64x64 tiles, whatever the tile).

    python benchmarks/tools/conv_grid_table.py [--library alexnet_kernels/_C.abi3.so] [--out FILE.md]
"""
import argparse
import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sass_counts import cuobjdump  # triton's cuobjdump

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSRC = os.path.join(ROOT, "csrc")
PROBE = os.path.join(CSRC, "emulate", "conv_plan_probe.cpp")

FORWARD, DGRAD, WGRAD = 0, 1, 2
KINDS = {FORWARD: "forward", DGRAD: "dgrad", WGRAD: "wgrad"}
FLOAT32, FLOAT16, BFLOAT16 = 0, 1, 2  # conv.h ConvDtype
MAX_GRID_Y = 65535

# (N, C, H, W, Cout, KH, KW, SH, SW, PH, PW, groups) at batch 1: AlexNet's two-tower layers (tests/test_conv_cuda.py).
ALEXNET = {
    "conv1": (1, 3, 224, 224, 96, 11, 11, 4, 4, 2, 2, 1),
    "conv2": (1, 96, 27, 27, 256, 5, 5, 1, 1, 2, 2, 2),
    "conv3": (1, 256, 13, 13, 384, 3, 3, 1, 1, 1, 1, 1),
    "conv4": (1, 384, 13, 13, 384, 3, 3, 1, 1, 1, 1, 2),
    "conv5": (1, 384, 13, 13, 256, 3, 3, 1, 1, 1, 1, 2),
}


def at_batch(geometry, n):
    return (n,) + tuple(geometry[1:])


class Device:
    """What the plan and the occupancy rules need of a GPU (CUDA programming guide, compute capabilities table)."""

    def __init__(self, name, arch, sm_count, smem_optin, smem_per_sm, max_warps, max_blocks):
        self.name, self.arch, self.sm_count = name, arch, sm_count
        self.smem_optin, self.smem_per_sm = smem_optin, smem_per_sm
        self.max_warps, self.max_blocks = max_warps, max_blocks


KB = 1024
DEVICES = [
    # sm_86 / sm_89 run the library's sm_80 code (its registers).
    Device("H100 / H200 (sm_90, 132 SMs)", "sm_90", 132, 227 * KB, 228 * KB, 64, 32),
    Device("A100 (sm_80, 108 SMs)", "sm_80", 108, 163 * KB, 164 * KB, 64, 32),
    Device("sm_86, 84 SMs (e.g. RTX 3090 / A40 class)", "sm_80", 84, 99 * KB, 100 * KB, 48, 16),
]


def residency(device, regs, threads, smem):
    """Blocks of a kernel one multiprocessor holds (the occupancy calculator's rules: registers allocated per warp
    in units of 256, per quarter of the register file; 1 KB of shared memory reserved per block)."""
    warps = -(-threads // 32)
    if smem > device.smem_optin:
        return 0
    per_warp = -(-regs * 32 // 256) * 256
    by_regs = (16384 // per_warp) * 4 // warps if regs else device.max_blocks
    by_smem = device.smem_per_sm // (smem + KB)
    by_warps = device.max_warps // warps
    return max(0, min(by_regs, by_smem, by_warps, device.max_blocks))


# --- conv.h's plan through the probe ---------------------------------------------------------------------

def load_probe(build_dir=None):
    """csrc/emulate/conv_plan_probe.cpp built with g++ (cached by the sources' digest) and loaded with ctypes."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise RuntimeError("needs a C++ compiler (g++) to build %s" % PROBE)
    digest = hashlib.sha256()
    for path in (PROBE, os.path.join(CSRC, "conv.h")):
        with open(path, "rb") as f:
            digest.update(f.read())
    build_dir = build_dir or os.path.join(tempfile.gettempdir(), "ak_conv_plan_probe")
    os.makedirs(build_dir, exist_ok=True)
    lib = os.path.join(build_dir, "conv_plan_probe_%s.so" % digest.hexdigest()[:16])
    if not os.path.exists(lib):
        tmp = lib + ".%d.tmp" % os.getpid()
        subprocess.run([cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-I" + CSRC, PROBE, "-o", tmp], check=True)
        os.replace(tmp, lib)
    probe = ctypes.CDLL(lib)
    probe.conv_plan_probe.restype = ctypes.c_int
    probe.conv_plan_probe.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_int,
                                      ctypes.c_int, ctypes.c_int64, ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                                      ctypes.c_char_p, ctypes.c_int]
    return probe


def tiles(probe):
    """[(bm, bn, bk, warps_m, warps_n, stages, {(kind, dtype): smem bytes})] of conv.h's kConvTiles (the backward
    kernels' stages also hold y tiles for the mask)."""
    shapes, smem = (ctypes.c_int64 * 64)(), (ctypes.c_int64 * 72)()
    count = probe.conv_plan_tiles(shapes, smem)
    return [tuple(shapes[t * 8:t * 8 + 6]) + ({(k, d): smem[(t * 3 + k) * 3 + d] for k in range(3) for d in range(3)},)
            for t in range(count)]


def plan(probe, kind, geometry, dtype, allow_tf32, sm_count, smem_optin, blocks_per_sm):
    """conv.h's plan: {"tile", "grid": (x, y, z), "splits", "reason"}; ValueError with conv.h's message for a
    problem the kernels reject."""
    g = (ctypes.c_int64 * 12)(*geometry)
    out = (ctypes.c_int64 * 5)()
    reason = ctypes.create_string_buffer(256)
    rc = probe.conv_plan_probe(kind, g, dtype, int(allow_tf32), sm_count, smem_optin, blocks_per_sm, out, reason,
                               len(reason))
    if rc:
        raise ValueError(reason.value.decode())
    return {"tile": out[0], "grid": (out[1], out[2], out[3]), "splits": out[4], "reason": reason.value.decode()}


# --- the wgrad kernels' registers from the SASS -------------------------------------------------------------

def wgrad_registers(library):
    """{(arch, dtype, tile (bm, bn), vec): registers} of the wgrad kernels in a built library's SASS."""
    text = subprocess.run([cuobjdump(), "-res-usage", library], capture_output=True, text=True, check=True).stdout
    regs, arch, key = {}, None, None
    types = {"f": FLOAT32, "6__half": FLOAT16, "13__nv_bfloat16": BFLOAT16}
    for line in text.splitlines():
        m = re.match(r"arch = (sm_\d+)", line.strip())
        if m:
            arch = m.group(1)
            continue
        m = re.search(r"conv2d_relu_wgrad_kernelI(f|6__half|13__nv_bfloat16)LNS0_8MathKindE(\d)ENS0_4TileILi(\d+)ELi"
                      r"(\d+)ELi\d+ELi\d+ELi\d+ELi\d+EEELb(\d)E", line)
        if m:
            key = (arch, types[m.group(1)], int(m.group(2)), (int(m.group(3)), int(m.group(4))), m.group(5) == "1")
            continue
        m = re.search(r"REG:(\d+)", line)
        if m and key is not None:
            regs[key] = int(m.group(1))
            key = None
    return regs


# --- before (commit 3c04327) ------------------------------------------------------------------------------

def splits_before(geometry, sm_count):
    """ops/conv.py's splits at 3c04327: about two blocks per multiprocessor counted in 64x64 tiles."""
    N, C, H, W, Cout, KH, KW, SH, SW, PH, PW, groups = geometry
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    K, Og, P = KH * KW * C // groups, Cout // groups, N * OH * OW
    tiles64 = -(-Og // 64) * -(-K // 64) * groups
    return max(1, min(-(-2 * sm_count // tiles64), -(-P // 1024), MAX_GRID_Y))


def math_kind(dtype, allow_tf32):
    return {BFLOAT16: 1, FLOAT16: 0}.get(dtype, 2 if allow_tf32 else 3)


def rows(probe, regs):
    """One row per (device, layer, batch, dtype, kernel): before and after."""
    shapes = tiles(probe)
    out = []
    for device in DEVICES:
        for layer, base in ALEXNET.items():
            for batch in (128, 1):
                geometry = at_batch(base, batch)
                for dtype, tf32, dname in ((BFLOAT16, True, "bf16"), (FLOAT32, True, "fp32 TF32")):
                    Cg = geometry[1] // geometry[11]
                    vec = Cg % (16 // (4 if dtype == FLOAT32 else 2)) == 0  # AlexNet: Og always a multiple
                    for kind in (FORWARD, DGRAD, WGRAD):
                        res = {}
                        for when, smem_optin in (("before", 0), ("after", device.smem_optin)):
                            # wgrad residency from the SASS registers of the kernel the plan picks
                            p = plan(probe, kind, geometry, dtype, tf32, device.sm_count, smem_optin, 0)
                            bm, bn, _, wm, wn, _, smem = shapes[p["tile"]]
                            r = None
                            if kind == WGRAD:
                                key = (device.arch, dtype, math_kind(dtype, tf32), (bm, bn), vec)
                                r = residency(device, regs[key], wm * wn * 32, smem[kind, dtype])
                                if when == "after":
                                    p = plan(probe, kind, geometry, dtype, tf32, device.sm_count, smem_optin, r)
                                else:
                                    s = splits_before(geometry, device.sm_count)
                                    p["grid"] = p["grid"][:2] + (s,)
                                    p["splits"] = s
                            p["fits"] = smem[kind, dtype] <= device.smem_optin
                            p["shape"] = "%dx%d" % (bm, bn)
                            p["smem"] = smem[kind, dtype]
                            p["residency"] = r
                            res[when] = p
                        out.append((device, layer, batch, dname, KINDS[kind], res))
    return out


def fmt_plan(p, sm_count):
    x, y, z = p["grid"]
    blocks = x * y * z
    text = "%s (%d, %d, %d) = %d, %.2f/SM" % (p["shape"], x, y, z, blocks, blocks / sm_count)
    if not p["fits"]:
        text += " **does not fit: %d B > opt-in**" % p["smem"]
    return text


def summary(all_rows):
    """The wgrad at batch 128, per device and layer: blocks (and per SM) before and after, bf16 and TF32."""
    lines = ["| device | layer | bf16 before | bf16 after | fp32 TF32 before | fp32 TF32 after |",
             "| --- | --- | --- | --- | --- | --- |"]
    cells = {}
    for device, layer, batch, dname, kind, res in all_rows:
        if kind == "wgrad" and batch == 128:
            for when in ("before", "after"):
                p = res[when]
                blocks = p["grid"][0] * p["grid"][1] * p["grid"][2]
                text = "%s, %d blocks (%.2f/SM)" % (p["shape"], blocks, blocks / device.sm_count)
                if not p["fits"]:
                    text += ", does not fit"
                cells[(device.name, layer, dname, when)] = text
    for device in DEVICES:
        for layer in ALEXNET:
            lines.append("| %s | %s | %s |" % (device.name, layer, " | ".join(
                cells[(device.name, layer, d, w)] for d in ("bf16", "fp32 TF32") for w in ("before", "after"))))
    return lines


def library_digest(library):
    """The sources digest baked into the library (a lone 16-hex-digit string among its strings), or "unknown"."""
    import re
    with open(library, "rb") as f:
        found = re.findall(rb"\x00([0-9a-f]{16})\x00", f.read())
    return found[0].decode() if len(set(found)) == 1 else "unknown"


def table(probe, regs, library):
    all_rows = rows(probe, regs)
    lines = ["# CUDA C++ conv: grid sizes per AlexNet layer, before and after issue 26 items 2 and 4 (computed)",
             "",
             ("**Computed, not measured** (no GPU ran): `python benchmarks/tools/conv_grid_table.py --out %s` runs "
              "csrc/conv.h's own plan functions (through csrc/emulate/conv_plan_probe.cpp) on each device's "
              "multiprocessor count and opt-in shared memory per block.  The wgrad's residency (blocks per "
              "multiprocessor; on a GPU the launcher asks cudaOccupancyMaxActiveBlocksPerMultiprocessor) comes here "
              "from the occupancy rules and the registers of the wgrad kernels in `%s`'s SASS (`cuobjdump "
              "-res-usage`; sm_86 runs the sm_80 code): the kernels of csrc/conv_cuda_kernels.cuh as that library was "
              "built (its sources digest %s).  New kernels (other registers) change the residency column and the "
              "wgrad splits with it."
              % ("benchmarks/results/issue26-conv-grid.md", os.path.relpath(library, ROOT), library_digest(library))),
             "",
             ("*Before*: commit 3c04327 -- tiles chosen without the device's shared-memory limit (a tile over it fails "
              "to launch: marked *does not fit*), the wgrad's pixel splits from ops/conv.py's formula for 64x64 tiles "
              "(`max(1, min(ceil(2*SMs / tiles64), ceil(P/1024)))`) whatever tile the plan picked.  *After*: "
              "conv.h's `choose_conv_tile` / `plan_conv_wgrad` among the tiles that fit the opt-in limit, and "
              "`conv_wgrad_splits` from the planned tile, the SM count and the kernel's residency r: target = "
              "SMs x max(r, 2) blocks; floor(target / tiles) splits when that fills 7/8 of the target, else the "
              "fewest more whose waves are 7/8 full; at most one split per 1024 pixels."),
             "",
             ("AlexNet's two-tower layers (groups 2 for conv2/4/5), 224x224 input, bf16 (fp16 plans alike) and fp32 "
              "on TF32 tensor cores.  At batch 1 the wgrad has too few pixels to split (conv2-5: 729 or 169)."),
             "",
             "## The wgrad at batch 128",
             ""] + summary(all_rows) + [
             "",
             "## Every kernel",
             "",
             "Each cell: tile (grid x, y, z) = blocks, blocks per SM.  Rows where before and after are equal are "
             "listed too."]
    current = None
    for device, layer, batch, dname, kind, res in all_rows:
        if device is not current:
            current = device
            lines += ["", "### %s: opt-in %d B per block, %d B per SM" % (device.name, device.smem_optin,
                                                                         device.smem_per_sm), "",
                      "| layer | batch | dtype | kernel | before | after | wgrad residency (after) |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
        before, after = res["before"], res["after"]
        r = "" if after["residency"] is None else "%d blocks/SM" % after["residency"]
        lines.append("| %s | %d | %s | %s | %s | %s | %s |" % (layer, batch, dname, kind,
                                                            fmt_plan(before, device.sm_count),
                                                            fmt_plan(after, device.sm_count), r))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", default=os.path.join(ROOT, "alexnet_kernels", "_C.abi3.so"),
                        help="built library whose SASS gives the wgrad kernels' registers")
    parser.add_argument("--out", help="write the markdown table here (default: print it)")
    args = parser.parse_args(argv)
    probe = load_probe()
    text = table(probe, wgrad_registers(args.library), args.library)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
