"""The hand-written CUDA convolution (csrc/conv_cuda_kernels.cuh, conv_cuda.cu, conv.h) without a GPU and with one.

Without a GPU:
  * the kernels' device code runs under csrc/emulate/conv_cuda_emulator.cpp (every thread a host thread,
    mma.sync emulated by the PTX ISA's fragment layouts, cp.async deferred to its wait_group) against float64
    F.conv2d + ReLU: the five AlexNet layer geometries scaled down and odd ones, in each path's precision
    (bf16 / fp16 with fp32 accumulation, TF32-rounded fp32, exact fp32), every compiled kernel (tile x loader);
  * the dgrad and wgrad kernels (the ReLU mask applied to dy on load; wgrad's fp32 partial sums over pixel
    splits, d(bias) in the same pass) likewise, against float64 conv2d_input / conv2d_weight;
  * the SASS of conv_cuda.cu compiled for sm_80 and sm_90 (nvcc -cubin, read with cuobjdump) has HMMA in the
    tensor-core kernels and cp.async (LDGSTS); register and shared-memory use are printed (pytest -s), no spills.
With a GPU (skipped here): backend="cuda" forward and backward at the five AlexNet layers, CUDA-graph capture."""
import os
import re
import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F
from torch.utils import cpp_extension

from common import gpu, rel_err, shared_build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
EMULATOR = os.path.join(CSRC, "emulate", "conv_cuda_emulator.cpp")
CL = torch.channels_last
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
TILES = 3  # conv.h kConvTiles
CP_ASYNC16, ROW_SPAN, SCALAR = 0, 1, 2


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    if not os.path.isfile(EMULATOR):
        pytest.skip("csrc/ is not in this tree (installed package without sources)")
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("needs a C++ compiler (g++) to build the emulator")
    build = tmp_path_factory.mktemp("conv_emulator")
    return cpp_extension.load("ak_conv_cuda_emulator", [EMULATOR], extra_include_paths=[CSRC],
                              extra_cflags=["-O1", "-std=c++20"], build_directory=str(build), verbose=False)


def tf32_round(t):
    """fp32 -> TF32 as cvt.rna.tf32.f32 (nearest, ties away from zero), kept in fp32."""
    bits = t.float().contiguous().view(torch.int32)
    sign = bits & -0x80000000
    rounded = (((bits & 0x7FFFFFFF) + 0x1000) & 0x7FFFE000) | sign
    return torch.where(torch.isfinite(t.float()), rounded.view(torch.float32), t.float())


def weight_rows(w, pad_to=1, offset=0):
    """w as the kernel reads it: channels_last rows (Cout, KH, KW, Cg), the row stride rounded up to pad_to,
    starting `offset` elements into its buffer.  The padding is NaN: were it read, the output would show it."""
    Cout, Cg, KH, KW = w.shape
    K = Cg * KH * KW
    stride = -(-K // pad_to) * pad_to
    buf = torch.full((Cout * stride + offset,), float("nan"), dtype=w.dtype)
    rows = buf[offset:].view(Cout, stride)
    rows[:, :K] = w.permute(0, 2, 3, 1).reshape(Cout, K)
    return rows.as_strided((Cout, Cg, KH, KW), (stride, 1, KW * Cg, Cg))


def make(N, C, H, W, Cout, k, stride, padding, groups, dtype, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    kh, kw = k
    x = torch.randn(N, C, H, W, generator=g).to(dtype).contiguous(memory_format=CL)
    w = (torch.randn(Cout, C // groups, kh, kw, generator=g) * (C // groups * kh * kw) ** -0.5).to(dtype)
    b = (torch.randn(Cout, generator=g) * 0.3).to(dtype) if bias else None
    return x, w, b


def run_emulated(emulator, x, w, b, stride, padding, groups, allow_tf32, tile=-1, loader=-1, y_layout=CL,
                 pad_to=8, w_offset=0, sm_count=0):
    OH = (x.shape[2] + 2 * padding[0] - w.shape[2]) // stride[0] + 1
    OW = (x.shape[3] + 2 * padding[1] - w.shape[3]) // stride[1] + 1
    y = torch.full((x.shape[0], w.shape[0], OH, OW), float("nan"), dtype=x.dtype).contiguous(memory_format=y_layout)
    info = emulator.conv2d_relu_forward(x, weight_rows(w, pad_to, w_offset), b, y, stride[0], stride[1], padding[0], padding[1],
                                        groups, allow_tf32, tile, loader, sm_count)
    return y, info


def reference(x, w, b, stride, padding, groups, tf32=False):
    xd, wd = (tf32_round(x).double(), tf32_round(w).double()) if tf32 else (x.double(), w.double())
    return torch.relu(F.conv2d(xd, wd, b.double() if b is not None else None, stride, padding, 1, groups))


def check(y, x, w, b, stride, padding, groups, allow_tf32):
    """The standards' bar: fp32 exact within 1e-5; TF32 within 1e-5 of the float64 result of TF32-rounded
    inputs; bf16 / fp16 at most 2x as far from float64 as torch's own same-dtype convolution (CPU)."""
    assert not y.isnan().any(), "unwritten or NaN outputs"
    ref = reference(x, w, b, stride, padding, groups)
    if x.dtype == torch.float32:
        if allow_tf32:
            assert rel_err(y, reference(x, w, b, stride, padding, groups, tf32=True)) <= 1e-5
            assert rel_err(y, ref) <= 2e-3  # TF32's 10-bit mantissa
        else:
            assert rel_err(y, ref) <= 1e-5
    else:
        own = torch.relu(F.conv2d(x, w, b, stride, padding, 1, groups))
        assert rel_err(y, ref) <= 2 * rel_err(own, ref) + 1e-6, (rel_err(y, ref), rel_err(own, ref))


# (N, C, H, W, Cout, (KH, KW), stride, padding, groups): AlexNet's layers scaled down (channel counts keep
# the per-group structure: conv1 C = 3 with 96 outputs, groups = 2 for conv2/4/5) and odd geometries.
GEOMETRIES = {
    "conv1": (2, 3, 35, 35, 96, (11, 11), (4, 4), (2, 2), 1),          # K = 363, row-span loader, tile 128x96
    "conv2": (2, 32, 7, 7, 256, (5, 5), (1, 1), (2, 2), 2),            # groups 2, Og 128: tile 128x128
    "conv3": (1, 64, 5, 5, 384, (3, 3), (1, 1), (1, 1), 1),            # Og 384: three 128-wide tiles
    "conv4": (2, 48, 5, 5, 192, (3, 3), (1, 1), (1, 1), 2),            # Og 96: tile 128x96
    "conv5": (2, 64, 4, 4, 128, (3, 3), (1, 1), (1, 1), 2),            # Og 64: tile 64x64
    "groups3-odd-channels": (2, 15, 9, 8, 21, (3, 2), (2, 1), (1, 2), 3),   # Cg 5, Og 7: scalar loader
    "odd-channels-stride23": (1, 5, 11, 13, 10, (3, 4), (2, 3), (0, 1), 1),  # Cg 5: row span, K = 60
    "1x1-K-below-tile": (3, 8, 5, 3, 24, (1, 1), (1, 1), (0, 0), 1),   # K = 8 < BK
    "pad-larger-than-kernel": (1, 16, 3, 3, 16, (2, 2), (1, 1), (3, 2), 2),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_emulated_kernels_match_float64_conv(emulator, name, dtype):
    N, C, H, W, Cout, k, stride, padding, groups = GEOMETRIES[name]
    x, w, b = make(N, C, H, W, Cout, k, stride, padding, groups, dtype, bias=name != "conv3")
    tf32_choices = [True, False] if dtype == torch.float32 else [True]
    for allow_tf32 in tf32_choices:
        y, info = run_emulated(emulator, x, w, b, stride, padding, groups, allow_tf32)
        check(y, x, w, b, stride, padding, groups, allow_tf32)
        if dtype == torch.float32:
            assert info["fma"] == (not allow_tf32)
    Cg = C // groups
    vec = 16 // x.element_size()
    expected = CP_ASYNC16 if Cg % vec == 0 and C % vec == 0 else ROW_SPAN if groups == 1 else SCALAR
    assert info["loader"] == expected, info


def test_layer_tiles_and_reasons(emulator):
    """The plan picks the tile conv.h documents per layer (and says why)."""
    expected = {"conv1": 1, "conv2": 0, "conv3": 0, "conv4": 1, "conv5": 2}
    for name, tile in expected.items():
        N, C, H, W, Cout, k, stride, padding, groups = GEOMETRIES[name]
        x, w, b = make(N, C, H, W, Cout, k, stride, padding, groups, torch.bfloat16)
        # N = 0: plan only, nothing to run
        x = x[:0]
        _, info = run_emulated(emulator, x, w, b, stride, padding, groups, True)
        assert info["tile"] == tile and info["reason"], (name, info)
    # With a GPU's worth of multiprocessors, a grid of a few large tiles drops to 64x64 tiles.
    N, C, H, W, Cout, k, stride, padding, groups = GEOMETRIES["conv2"]
    x, w, b = make(N, C, H, W, Cout, k, stride, padding, groups, torch.bfloat16)
    _, info = run_emulated(emulator, x[:0], w, b, stride, padding, groups, True, sm_count=132)
    assert info["tile"] == 2 and "fill" in info["reason"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_compiled_kernel_under_the_emulator(emulator, dtype):
    """Each tile with each A loader (conv.h: cp.async16, row span, scalar), on one geometry that all accept:
    groups 1, channels a multiple of 8, M and K not multiples of any tile, padding and stride 2."""
    x, w, b = make(2, 16, 9, 7, 40, (3, 3), (2, 2), (1, 1), 1, dtype, seed=3)
    seen = set()
    for loader in (CP_ASYNC16, ROW_SPAN, SCALAR):
        for tile in range(TILES):
            for allow_tf32 in ([True, False] if dtype == torch.float32 else [True]):
                y, info = run_emulated(emulator, x, w, b, (2, 2), (1, 1), 1, allow_tf32, tile=tile, loader=loader)
                check(y, x, w, b, (2, 2), (1, 1), 1, allow_tf32)
                seen.add(info["kernel"])
    assert len(seen) == (3 * 2 + 1 + (3 if dtype == torch.float32 else 0)), seen


def test_layouts_alignment_and_nan_under_the_emulator(emulator):
    """NCHW output strides (no paired stores), weight rows not 16-byte aligned (element loads of the weight
    tile), x misaligned (cp.async16 impossible: the row-span loader), no bias, and NaN propagation (relu keeps
    NaN, as torch.relu)."""
    dtype = torch.bfloat16
    x, w, b = make(2, 16, 6, 6, 24, (3, 3), (1, 1), (1, 1), 1, dtype, seed=5)
    y, info = run_emulated(emulator, x, w, None, (1, 1), (1, 1), 1, True, y_layout=torch.contiguous_format,
                           w_offset=1)
    assert not info["y_pair"] and not info["w_vec"] and info["loader"] == CP_ASYNC16
    check(y, x, w, None, (1, 1), (1, 1), 1, True)
    # x one element into a buffer: 2-byte aligned, never 16-byte aligned.
    buf = torch.empty(x.numel() + 1, dtype=dtype)
    xs = buf[1:].view(2, 6, 6, 16).permute(0, 3, 1, 2)
    xs.copy_(x)
    assert xs.is_contiguous(memory_format=CL)
    y, info = run_emulated(emulator, xs, w, b, (1, 1), (1, 1), 1, True)
    assert info["loader"] == ROW_SPAN
    check(y, xs, w, b, (1, 1), (1, 1), 1, True)
    x2 = x.clone()
    x2[1, 3, 2, 4] = float("nan")
    y, _ = run_emulated(emulator, x2, w, b, (1, 1), (1, 1), 1, True)
    ref = reference(x2, w, b, (1, 1), (1, 1), 1)
    assert torch.equal(y.isnan(), ref.isnan()) and ref.isnan().any()


def transposed_weight(w, groups, pad_to=8):
    """The dgrad kernel's weight: one row per input channel (g, c), k = (kh*KW + kw)*Og + o, rows padded."""
    Cout, Cg, KH, KW = w.shape
    Og = Cout // groups
    Kd = KH * KW * Og
    rows = w.reshape(groups, Og, Cg, KH, KW).permute(0, 2, 3, 4, 1).reshape(groups * Cg, Kd)
    stride = -(-Kd // pad_to) * pad_to
    buf = torch.full((groups * Cg, stride), float("nan"), dtype=w.dtype)
    buf[:, :Kd] = rows
    return buf


def dgrad_reference(x_shape, w, dy, y, stride, padding, groups):
    g = dy.double() * (y > 0)
    return torch.nn.grad.conv2d_input(x_shape, w.double(), g, stride, padding, 1, groups)


# dgrad's reduction is KH*KW*Og long and its rows are input pixels: smaller layers keep the emulation short.
DGRAD_GEOMETRIES = {
    "conv1": (1, 3, 19, 19, 16, (11, 11), (4, 4), (2, 2), 1),          # stride 4: most taps miss
    "conv2": (1, 32, 6, 6, 64, (5, 5), (1, 1), (2, 2), 2),
    "conv4": (2, 48, 4, 4, 96, (3, 3), (1, 1), (1, 1), 2),
    "groups3-odd-channels": GEOMETRIES["groups3-odd-channels"],    # Og 7: element loads of dy
    "odd-channels-stride23": GEOMETRIES["odd-channels-stride23"],
    "pad-larger-than-kernel": GEOMETRIES["pad-larger-than-kernel"],
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(DGRAD_GEOMETRIES))
def test_emulated_dgrad_matches_float64(emulator, name, dtype):
    """d(input) with the ReLU mask applied to dy on load: against float64 conv2d_input of dy * (y > 0)."""
    N, C, H, W, Cout, k, stride, padding, groups = DGRAD_GEOMETRIES[name]
    x, w, b = make(N, C, H, W, Cout, k, stride, padding, groups, dtype)
    y = torch.relu(F.conv2d(x.float(), w.float(), b.float(), stride, padding, 1, groups)).to(dtype)
    y = y.contiguous(memory_format=CL)
    y[0, :, ::2, ::3] = 0  # exact zeros, masked as relu's own
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(9)).to(dtype).contiguous(memory_format=CL)
    ref = dgrad_reference(x.shape, w, dy, y, stride, padding, groups)
    own = torch.nn.grad.conv2d_input(x.shape, w, (dy * (y > 0)).to(dtype), stride, padding, 1, groups)
    for allow_tf32 in ([True, False] if dtype == torch.float32 else [True]):
        for dx_layout in (CL, torch.contiguous_format) if dtype == torch.bfloat16 else (CL,):
            dx = torch.full(x.shape, float("nan"), dtype=dtype).contiguous(memory_format=dx_layout)
            info = emulator.conv2d_relu_dgrad(dy, y, transposed_weight(w, groups), dx,
                                              [k[0], k[1], stride[0], stride[1], padding[0], padding[1], groups],
                                              allow_tf32, -1, -1, 0)
            assert not dx.isnan().any()
            if dtype == torch.float32:
                bound = 2e-3 if allow_tf32 else 1e-5
                assert rel_err(dx, ref) <= bound, (info, rel_err(dx, ref))
            else:
                assert rel_err(dx, ref) <= 2 * rel_err(own, ref) + 1e-6, (info, rel_err(dx, ref), rel_err(own, ref))
    vec = 16 // x.element_size()
    assert info["vec"] == ((Cout // groups) % vec == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_every_compiled_dgrad_kernel_under_the_emulator(emulator, dtype):
    N, C, H, W, Cout, k, stride, padding, groups = 2, 24, 7, 6, 16, (3, 3), (2, 2), (1, 1), 1
    x, w, b = make(N, C, H, W, Cout, k, stride, padding, groups, dtype, seed=4)
    y = torch.relu(F.conv2d(x.float(), w.float(), b.float(), stride, padding)).to(dtype).contiguous(memory_format=CL)
    dy = torch.randn(y.shape).to(dtype).contiguous(memory_format=CL)
    ref = dgrad_reference(x.shape, w, dy, y, stride, padding, groups)
    seen = set()
    for vec in (1, 0):
        for tile in range(TILES):
            for allow_tf32 in ([True, False] if dtype == torch.float32 else [True]):
                dx = torch.full(x.shape, float("nan"), dtype=dtype).contiguous(memory_format=CL)
                info = emulator.conv2d_relu_dgrad(dy, y, transposed_weight(w, groups), dx, [3, 3, 2, 2, 1, 1, 1],
                                                  allow_tf32, tile, vec, 0)
                bound = 1e-5 if (dtype == torch.float32 and not allow_tf32) else 2e-3 if dtype == torch.float32 else 8e-3
                assert rel_err(dx, ref) <= bound, (info, rel_err(dx, ref))
                seen.add(info["kernel"])
    assert len(seen) == (3 + 1 + (2 if dtype == torch.float32 else 0)), seen


WGRAD_GEOMETRIES = {
    "conv1": (1, 3, 19, 19, 16, (11, 11), (4, 4), (2, 2), 1),          # C = 3: element loads
    "conv2": (2, 32, 6, 6, 64, (5, 5), (1, 1), (2, 2), 2),
    "conv3-Og128": (2, 16, 5, 5, 128, (3, 3), (1, 1), (1, 1), 1),     # 128x128 tile
    "conv4": (2, 48, 4, 4, 96, (3, 3), (1, 1), (1, 1), 2),
    "groups3-odd-channels": GEOMETRIES["groups3-odd-channels"],
    "odd-channels-stride23": GEOMETRIES["odd-channels-stride23"],
}


def wgrad_reference(x, w_shape, dy, y, stride, padding, groups):
    g = dy.double() * (y > 0)
    return torch.nn.grad.conv2d_weight(x.double(), w_shape, g, stride, padding, 1, groups), g.sum((0, 2, 3))


def run_wgrad(emulator, x, w_shape, dy, y, stride, padding, groups, allow_tf32, splits, tile=-1, vec=-1):
    Cout, Cg, KH, KW = w_shape
    dw_part = torch.full((splits, Cout, Cg * KH * KW), float("nan"))
    db_part = torch.full((splits, Cout), float("nan"))
    info = emulator.conv2d_relu_wgrad(dy, y, x, dw_part, db_part,
                                      [KH, KW, stride[0], stride[1], padding[0], padding[1], groups], allow_tf32,
                                      tile, vec)
    assert not dw_part.isnan().any() and not db_part.isnan().any(), "unwritten partial sums"
    dw = dw_part.sum(0).view(Cout, KH, KW, Cg).permute(0, 3, 1, 2)
    return dw, db_part.sum(0), info


def wgrad_case(name, dtype, seed=0):
    N, C, H, W, Cout, k, stride, padding, groups = WGRAD_GEOMETRIES[name]
    x, w, b = make(N, C, H, W, Cout, k, stride, padding, groups, dtype, seed=seed)
    y = torch.relu(F.conv2d(x.float(), w.float(), b.float(), stride, padding, 1, groups)).to(dtype)
    y = y.contiguous(memory_format=CL)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 9)).to(dtype).contiguous(memory_format=CL)
    return x, w.shape, dy, y, stride, padding, groups


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(WGRAD_GEOMETRIES))
def test_emulated_wgrad_matches_float64(emulator, name, dtype):
    """d(weight) and d(bias), the ReLU mask applied to dy on load, fp32 partial sums over 1 and 3 pixel splits
    added in order, against float64 conv2d_weight and the sum of dy * (y > 0)."""
    x, w_shape, dy, y, stride, padding, groups = wgrad_case(name, dtype)
    dw_ref, db_ref = wgrad_reference(x, w_shape, dy, y, stride, padding, groups)
    for allow_tf32 in ([True, False] if dtype == torch.float32 else [True]):
        for splits in (1, 3):
            dw, db, info = run_wgrad(emulator, x, w_shape, dy, y, stride, padding, groups, allow_tf32, splits)
            # The partial sums stay fp32: exact products of bf16 / fp16 / exact fp32 inputs, fp32 sums.
            bound = 2e-3 if (dtype == torch.float32 and allow_tf32) else 1e-5
            assert rel_err(dw, dw_ref) <= bound, (info, rel_err(dw, dw_ref))
            assert rel_err(db, db_ref) <= 1e-5, (info, rel_err(db, db_ref))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_every_compiled_wgrad_kernel_under_the_emulator(emulator, dtype):
    x, w_shape, dy, y, stride, padding, groups = wgrad_case("conv3-Og128", dtype, seed=2)
    dw_ref, db_ref = wgrad_reference(x, w_shape, dy, y, stride, padding, groups)
    seen = set()
    for vec in (1, 0):
        for tile in (0, 2):
            for allow_tf32 in ([True, False] if dtype == torch.float32 else [True]):
                dw, db, info = run_wgrad(emulator, x, w_shape, dy, y, stride, padding, groups, allow_tf32, 2,
                                         tile=tile, vec=vec)
                bound = 2e-3 if (dtype == torch.float32 and allow_tf32) else 1e-5
                assert rel_err(dw, dw_ref) <= bound and rel_err(db, db_ref) <= 1e-5, info
                seen.add(info["kernel"])
    assert len(seen) == (3 + (2 if dtype == torch.float32 else 0)), seen


def test_a_wrong_fragment_layout_fails_under_the_emulator(tmp_path):
    """The emulator is not a tautology: the kernel with two A-fragment registers swapped (rows g+8 and columns
    2t+8 exchanged, a plausible slip) computes a wrong convolution under it."""
    if not os.path.isfile(EMULATOR) or shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("needs csrc/ and a C++ compiler")
    mutated = tmp_path / "csrc"
    shutil.copytree(CSRC, mutated)
    kernel = mutated / "conv_cuda_kernels.cuh"
    text = kernel.read_text()
    right = ("      af[mt][1] = conv_lds32<kSiteAFrag>(p + 8 * pitch);\n"
             "      af[mt][2] = conv_lds32<kSiteAFrag>(p + 8);\n")
    assert right in text
    kernel.write_text(text.replace(right, right.replace("af[mt][1]", "af[mt][@]").replace("af[mt][2]", "af[mt][1]")
                                   .replace("af[mt][@]", "af[mt][2]")))
    build = tmp_path / "build"
    build.mkdir()
    wrong = cpp_extension.load("ak_conv_cuda_emulator_mutated", [str(mutated / "emulate" / "conv_cuda_emulator.cpp")],
                               extra_include_paths=[str(mutated)], extra_cflags=["-O1", "-std=c++20"], build_directory=str(build),
                               verbose=False)
    x, w, b = make(1, 64, 5, 5, 128, (3, 3), (1, 1), (1, 1), 2, torch.bfloat16)
    y, _ = run_emulated(wrong, x, w, b, (1, 1), (1, 1), 2, True)
    assert rel_err(y, reference(x, w, b, (1, 1), (1, 1), 2)) > 0.1


# ---- shared-memory bank conflicts (the emulator's counts of what the code asks of the banks) ----------------

def test_bank_model_of_the_emulator(emulator):
    """csrc/emulate/smem_banks.h: 32 banks of 4 bytes; <= 4-byte accesses one phase of 32 lanes, 16-byte
    accesses four quarter-warp phases, ldmatrix one phase per 8x8 matrix; lanes reading one word share it."""
    lanes = range(32)
    bank = emulator.bank_wavefronts
    assert bank([4 * l for l in lanes], 4, 0) == (1, 1)          # 32 banks, a word each
    assert bank([0] * 32, 4, 0) == (1, 1)                        # broadcast
    assert bank([2 * l for l in lanes], 2, 0) == (1, 1)          # 16-bit neighbours share words
    assert bank([8 * l for l in lanes], 4, 0) == (2, 1)          # 2-way
    assert bank([80 * l for l in lanes], 2, 0) == (4, 1)         # a column of 80-byte rows: 4-way
    assert bank([16 * l for l in lanes], 16, 0) == (4, 4)        # 512 contiguous bytes: a wavefront per phase
    # four 16-byte chunks per 80-byte row (the forward's cp.async): rows r and r + 1 of a phase collide once
    assert bank([80 * (l // 4) + 16 * (l % 4) for l in lanes], 16, 0) == (8, 4)
    assert bank([-1] * 8 + [16 * l for l in range(24)], 16, 0) == (3, 3)  # an idle phase costs nothing
    # ldmatrix.x4: rows 272 bytes apart hit 8 distinct 16-byte bank groups, 256 bytes apart one
    assert bank([272 * (l % 8) + 4096 * (l // 8) for l in lanes], 16, 4) == (4, 4)
    assert bank([256 * (l % 8) + 4096 * (l // 8) for l in lanes], 16, 4) == (32, 4)


# Per pass, the AlexNet geometries scaled down (the tables above), bf16 (fp16 has the same layouts) and TF32.
BANK_CASES = {
    "forward": ["conv1", "conv2", "conv3", "conv4", "conv5"],
    "dgrad": ["conv1", "conv2", "conv4"],
    "wgrad": ["conv1", "conv2", "conv3-Og128", "conv4"],
}


def _bank_counts(emulator, kind, name, dtype):
    if kind == "forward":
        N, C, H, W, Cout, k, stride, padding, groups = GEOMETRIES[name]
        x, w, b = make(N, C, H, W, Cout, k, stride, padding, groups, dtype)
        y, info = run_emulated(emulator, x, w, b, stride, padding, groups, True)
        check(y, x, w, b, stride, padding, groups, True)
    elif kind == "dgrad":
        N, C, H, W, Cout, k, stride, padding, groups = DGRAD_GEOMETRIES[name]
        x, w, b = make(N, C, H, W, Cout, k, stride, padding, groups, dtype)
        y = torch.relu(F.conv2d(x.float(), w.float(), b.float(), stride, padding, 1, groups)).to(dtype)
        y = y.contiguous(memory_format=CL)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(9)).to(dtype).contiguous(memory_format=CL)
        dx = torch.full(x.shape, float("nan"), dtype=dtype).contiguous(memory_format=CL)
        info = emulator.conv2d_relu_dgrad(dy, y, transposed_weight(w, groups), dx,
                                          [k[0], k[1], stride[0], stride[1], padding[0], padding[1], groups], True,
                                          -1, -1, 0)
        ref = dgrad_reference(x.shape, w, dy, y, stride, padding, groups)
        assert rel_err(dx, ref) <= (2e-3 if dtype == torch.float32 else 8e-3), info
    else:
        x, w_shape, dy, y, stride, padding, groups = wgrad_case(name, dtype)
        dw, db, info = run_wgrad(emulator, x, w_shape, dy, y, stride, padding, groups, True, 1)
        dw_ref, db_ref = wgrad_reference(x, w_shape, dy, y, stride, padding, groups)
        assert rel_err(dw, dw_ref) <= (2e-3 if dtype == torch.float32 else 1e-5), info
    return info


@pytest.mark.parametrize("kind", list(BANK_CASES))
def test_shared_memory_bank_conflicts_under_the_emulator(emulator, kind):
    """Bank-conflict ways per shared-memory access site (csrc/emulate/smem_banks.h), printed (pytest -s) for
    benchmarks/results/issue26-conv-evidence.md: warp instructions, wavefronts, and the ideal (one per phase).
    Every site of every pass is conflict-free: the wgrad's (k-major layout, ldmatrix.trans) fills, fragment loads
    and d(bias) sums, every pass's fragment loads, the forward's and dgrad's 16-byte fills (rows in chunk_row
    order) and the forward's row-span A fill (conv1, C = 3: gathered into registers, stored as 16-byte chunks
    with the rows permuted, LoaderRowSpan::row_of)."""
    print("\n| pass | layer | dtype | kernel | site | warp instructions | wavefronts | ideal | ways |")
    print("|---|---|---|---|---|---:|---:|---:|---:|")
    for dtype in (torch.bfloat16, torch.float32):
        for name in BANK_CASES[kind]:
            info = _bank_counts(emulator, kind, name, dtype)
            assert info["smem"], info
            for site, (inst, wavefronts, ideal, worst) in info["smem"].items():
                assert inst > 0 and wavefronts >= ideal >= inst, (site, info)
                assert wavefronts == ideal, (kind, name, dtype, site, info)
                print("| %s | %s | %s | %s | %s | %d | %d | %d | %.2f |" % (
                    kind, name, str(dtype)[6:], info["kernel"], site, inst, wavefronts, ideal, wavefronts / ideal))


# ---- SASS of the compiled kernels ------------------------------------------------------------------------

def _cuobjdump():
    try:
        from triton import knobs
        path = knobs.nvidia.cuobjdump.path
    except Exception:  # noqa: BLE001 -- an older triton: no knobs
        path = None
    return path if path and os.path.exists(path) else shutil.which("cuobjdump")


@pytest.fixture(scope="module")
def cubins(tmp_path_factory):
    nvcc, tool = shutil.which("nvcc"), _cuobjdump()
    if nvcc is None:
        pytest.skip("no nvcc: cannot compile csrc/conv_cuda.cu")
    if tool is None:
        pytest.skip("no cuobjdump (it ships with triton's NVIDIA backend and the CUDA toolkit)")
    # Every file of csrc/ is an input (conv_cuda.cu and the headers it includes); no torch header is.
    sources = [os.path.join(CSRC, f) for f in os.listdir(CSRC) if os.path.isfile(os.path.join(CSRC, f))]
    built = {}
    for arch in ("sm_80", "sm_90"):
        # The flags of setup.py's nvcc_flags (fast math without flush-to-zero).
        built[arch] = shared_build("conv_%s.cubin" % arch,
                                   [nvcc, "-std=c++17", "-arch=" + arch, "-cubin", "-O3", "--use_fast_math", "-ftz=false",
                                    "-DAK_WITH_CUDA", "-I" + CSRC, os.path.join(CSRC, "conv_cuda.cu"), "-o", "{out}"],
                                   CSRC, sources, tmp_path_factory)
    return tool, built


def _functions(text):
    parts = re.split(r"^\s*Function : (\S+)", text, flags=re.M)[1:]
    return dict(zip(parts[::2], parts[1::2]))


def _demangle(names):
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        return {n: n for n in names}
    res = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True)
    return dict(zip(names, res.stdout.splitlines()))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_conv_kernels_run_on_tensor_cores_in_the_sass(cubins, arch):
    tool, built = cubins
    sass = subprocess.run([tool, "-sass", built[arch]], capture_output=True, text=True, timeout=600)
    assert sass.returncode == 0, sass.stderr[-2000:]
    kernels = _functions(sass.stdout)
    names = _demangle(list(kernels))
    conv = {n: s for n, s in kernels.items() if re.search(r"conv2d_relu_(fwd|dgrad|wgrad)_kernel", n)}
    # forward: 3 dtypes x (3 tiles x 2 loaders + scalar) + 3 exact-fp32 loaders; dgrad: 3 x (3 tiles + element
    # loads) + 2 exact fp32
    assert sum("fwd_kernel" in n for n in conv) == 24, sorted(names[n] for n in conv)
    assert sum("dgrad_kernel" in n for n in conv) == 14, sorted(names[n] for n in conv)
    # wgrad: 3 x (tiles 0 and 2 with vector loads + element loads) + 2 exact fp32
    assert sum("wgrad_kernel" in n for n in conv) == 11, sorted(names[n] for n in conv)
    usage = subprocess.run([tool, "-res-usage", built[arch]], capture_output=True, text=True, timeout=600).stdout
    res = dict(re.findall(r"Function (\S+):\s*\n\s*(REG:\d+ STACK:\d+ SHARED:\d+[^\n]*)", usage))
    print("\n%s: conv kernels, registers / stack / static shared memory (dynamic smem: conv.h conv_smem_bytes)" % arch)
    for n in sorted(conv, key=lambda n: names[n]):
        sig = names[n]
        fma = "MathKind)3" in sig
        mma = re.findall(r"\bHMMA\.(\S+)", conv[n])
        if fma:
            assert not mma and "FFMA" in conv[n], sig
        else:
            assert mma, "no HMMA in %s" % sig
            if "MathKind)2" in sig:
                assert all("TF32" in m for m in mma), sig
            elif "BFloat16" in sig or "bfloat16" in sig:
                assert all("BF16" in m for m in mma), sig
        regs = int(re.search(r"REG:(\d+)", res[n]).group(1))
        stack = int(re.search(r"STACK:(\d+)", res[n]).group(1))
        short = re.sub(r"\(ak::conv_detail::MathKind\)", "MathKind ", sig.replace("ak::conv_detail::", ""))
        print("  %s\n      %s  HMMA x%d" % (short.replace("ak::ConvLoader", "ConvLoader"), res[n], len(mma)))
        local = int(re.search(r"LOCAL:(\d+)", res[n]).group(1))
        assert regs <= 255 and stack == 0 and local == 0, (sig, res[n])  # no spills to local memory
    assert any("LDGSTS" in s for s in conv.values()), "no cp.async (LDGSTS) in the conv kernels"


def test_binding_checks_name_the_problem():
    """The compiled entry points' argument checks (csrc/bindings.cpp) reject bad input with a message, never a
    crash; on a CPU-only machine the first check met is the device."""
    from alexnet_kernels import _extension
    ext = _extension.load()
    if ext is None or not hasattr(ext, "conv2d_relu_forward_cuda"):
        pytest.skip("alexnet_kernels._C is not built with the CUDA convolution")
    x = torch.randn(1, 3, 8, 8).contiguous(memory_format=CL)
    w = torch.randn(4, 3, 3, 3).contiguous(memory_format=CL)
    y = torch.empty(1, 4, 6, 6)
    with pytest.raises(RuntimeError, match="x must be a cuda tensor"):
        ext.conv2d_relu_forward_cuda(x, w, None, y, 1, 1, 0, 0, 1, True)
    with pytest.raises(RuntimeError, match="dy must be a cuda tensor"):
        ext.conv2d_relu_dgrad_cuda(y, y, w.reshape(3, 36), x, 3, 3, 1, 1, 0, 0, 1, True)
    with pytest.raises(RuntimeError, match="dy must be a cuda tensor"):
        ext.conv2d_relu_wgrad_cuda(y, y, x, torch.empty(1, 4, 27), torch.empty(1, 4), 3, 3, 1, 1, 0, 0, 1, True)


# ---- on a GPU (skipped without one) ----------------------------------------------------------------------

ALEXNET = {  # full-size AlexNet (two-tower channel counts), batch 8
    "conv1": (8, 3, 224, 224, 96, 11, 4, 2, 1),
    "conv2": (8, 96, 27, 27, 256, 5, 1, 2, 2),
    "conv3": (8, 256, 13, 13, 384, 3, 1, 1, 1),
    "conv4": (8, 384, 13, 13, 384, 3, 1, 1, 2),
    "conv5": (8, 384, 13, 13, 256, 3, 1, 1, 2),
}


def _has_cuda_conv():
    from alexnet_kernels import _extension
    ext = _extension.load()
    return ext is not None and hasattr(ext, "conv2d_relu_forward_cuda")


@gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layer", list(ALEXNET))
def test_cuda_backend_at_alexnet_layers(layer, dtype):
    import alexnet_kernels.conv as conv
    if not _has_cuda_conv():
        pytest.skip("alexnet_kernels._C is built without the CUDA convolution")
    N, C, H, W, Cout, k, s, p, groups = ALEXNET[layer]
    torch.manual_seed(0)
    x = torch.randn(N, C, H, W, device="cuda").to(dtype).contiguous(memory_format=CL).requires_grad_()
    w = (torch.randn(Cout, C // groups, k, k, device="cuda") * (C // groups * k * k) ** -0.5).to(dtype)
    w = w.contiguous(memory_format=CL).requires_grad_()
    b = (torch.randn(Cout, device="cuda") * 0.3).to(dtype).requires_grad_()
    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        y = conv.conv2d_relu(x, w, b, s, p, groups=groups, backend="cuda")
        own = torch.relu(F.conv2d(x, w, b, s, p, 1, groups))
        ref = torch.relu(F.conv2d(x.double(), w.double(), b.double(), s, p, 1, groups))
        if dtype == torch.float32:
            assert rel_err(y, ref) <= 2e-3
        else:
            assert rel_err(y, ref) <= 2 * rel_err(own, ref) + 1e-6
        dy = torch.randn_like(y)
        gx, gw, gb = torch.autograd.grad(y, (x, w, b), dy)
        rx, rw, rb = torch.autograd.grad(ref, (x, w, b), dy.double())
        tol = 2e-3 if dtype == torch.float32 else 2e-2
        assert rel_err(gx, rx) <= tol and rel_err(gw, rw) <= tol and rel_err(gb, rb) <= tol
    finally:
        torch.backends.cudnn.allow_tf32 = prev


@gpu
def test_cuda_backend_under_cuda_graph_capture():
    import alexnet_kernels.conv as conv
    from common import capture_and_replay
    if not _has_cuda_conv():
        pytest.skip("alexnet_kernels._C is built without the CUDA convolution")
    x = torch.randn(4, 96, 27, 27, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=CL)
    w = (torch.randn(256, 48, 5, 5, device="cuda") * 0.03).to(torch.bfloat16).contiguous(memory_format=CL)
    b = torch.randn(256, device="cuda", dtype=torch.bfloat16)
    out = {}

    def step():
        out["y"] = conv.conv2d_relu(x, w, b, 1, 2, groups=2, backend="cuda")

    capture_and_replay(step, lambda: x.normal_())
    ref = torch.relu(F.conv2d(x.double(), w.double(), b.double(), 1, 2, 1, 2))
    assert rel_err(out["y"], ref) <= 2e-2
