"""The CUDA C++ convolution's launch plan (csrc/conv.h) without a GPU: tile, grid and wgrad pixel splits per device.

conv.h's plan functions are pure (problem, dtype, multiprocessor count, opt-in shared memory per block, the wgrad
kernel's residency -> tile, grid, splits); csrc/emulate/conv_plan_probe.cpp exposes them to ctypes
(benchmarks/tools/conv_grid_table.py builds it with g++).  Checked at AlexNet's five layers, batch 128 and 1, for a
132-SM sm_90 (H100 / H200), a 108-SM sm_80 (A100) and an 84-SM sm_86 with 99 KB:
  * no tile is chosen that does not fit the device's opt-in shared memory (the TF32 128x128 tile, 110,592 B, is
    never chosen on the 99 KB device), and every grid is within CUDA's limits;
  * the wgrad grid fills the GPU: max(residency, 2) blocks per multiprocessor (the target) where the problem has
    enough pixels -- the most splits within the target when they fill 7/8 of it, else the fewest more whose waves
    are at least 7/8 full;
  * a grid y above 65535 moves to the widest fitting tile (fewer column tiles), never a narrower one."""
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks", "tools"))
import conv_grid_table as grid_table

from conv_grid_table import ALEXNET, BFLOAT16, DGRAD, FLOAT16, FLOAT32, FORWARD, WGRAD

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                reason="needs a C++ compiler (g++) to build csrc/emulate/conv_plan_probe.cpp")

KB = 1024
DEVICES = {d.arch + "/%d" % d.sm_count: d for d in grid_table.DEVICES}
DTYPES = [(BFLOAT16, True), (FLOAT16, True), (FLOAT32, True), (FLOAT32, False)]
MIN_PIXELS_PER_SPLIT = 1024  # conv.h kConvWgradMinPixelsPerSplit


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return grid_table.load_probe(str(tmp_path_factory.mktemp("conv_plan_probe")))


@pytest.fixture(scope="module")
def tiles(probe):
    return grid_table.tiles(probe)


def cdiv(a, b):
    return -(-a // b)


def sizes(geometry):
    N, C, H, W, Cout, KH, KW, SH, SW, PH, PW, groups = geometry
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    return {"P": N * OH * OW, "K": KH * KW * C // groups, "Og": Cout // groups, "Cg": C // groups,
            "groups": groups, "rows_fwd": N * OH * OW, "rows_dgrad": N * H * W}


def test_the_device_table_matches_the_issue(tiles):
    """The opt-in limits the plan is given, and the tile sizes they exclude (issue 26: TF32 128x128 = 110,592 B in
    the forward; the backward's stages also hold y tiles: 147,456 B, and its 64x64 TF32 tile fills 99 KB exactly)."""
    limits = {d.arch + "/%d" % d.sm_count: d.smem_optin for d in grid_table.DEVICES}
    assert limits == {"sm_90/132": 227 * KB, "sm_80/108": 163 * KB, "sm_80/84": 99 * KB}
    assert tiles[0][:2] == (128, 128) and tiles[0][6][FORWARD, FLOAT32] == 110592
    for kind in (FORWARD, DGRAD, WGRAD):
        assert tiles[0][6][kind, FLOAT32] > 99 * KB and tiles[0][6][kind, BFLOAT16] <= 99 * KB
        assert all(tiles[2][6][kind, d] <= 99 * KB for d in (FLOAT32, FLOAT16, BFLOAT16))
    for kind in (DGRAD, WGRAD):
        assert tiles[0][6][kind, FLOAT32] == 147456 <= 163 * KB and tiles[2][6][kind, FLOAT32] == 99 * KB
        # bm * (bk + 16 bytes of elements) per y tile, stages - 1 of them, beside the forward's stages
        for bm, bn, bk, wm, wn, stages, smem in tiles:
            for d, esize in ((FLOAT32, 4), (BFLOAT16, 2)):
                assert smem[kind, d] - smem[FORWARD, d] == (stages - 1) * bm * (bk + 16 // esize) * esize
    assert all(t[6][FORWARD, d] <= 99 * KB for t in tiles[1:] for d in (FLOAT32, FLOAT16, BFLOAT16))


@pytest.mark.parametrize("device", list(DEVICES))
@pytest.mark.parametrize("batch", [128, 1])
@pytest.mark.parametrize("layer", list(ALEXNET))
def test_alexnet_plans_fit_the_device_and_fill_it(probe, tiles, device, batch, layer):
    d = DEVICES[device]
    geometry = grid_table.at_batch(ALEXNET[layer], batch)
    s = sizes(geometry)
    for dtype, tf32 in DTYPES:
        for kind in (FORWARD, DGRAD, WGRAD):
            for residency in (1, 2, 4):
                plan = grid_table.plan(probe, kind, geometry, dtype, tf32, d.sm_count, d.smem_optin, residency)
                bm, bn, bk, wm, wn, stages, smem = tiles[plan["tile"]]
                where = (layer, batch, dtype, tf32, kind, residency, plan)
                assert smem[kind, dtype] <= d.smem_optin, where
                assert plan["reason"], where
                x, y, z = plan["grid"]
                assert 1 <= x <= 2 ** 31 - 1 and 1 <= y <= 65535 and 1 <= z <= 65535, where
                if kind == FORWARD:
                    assert (x, y, z) == (cdiv(s["rows_fwd"], bm), cdiv(s["Og"], bn), s["groups"]), where
                elif kind == DGRAD:
                    assert (x, y, z) == (cdiv(s["rows_dgrad"], bm), cdiv(s["Cg"], bn), s["groups"]), where
                else:
                    # the grid of the tile the plan picked, split over pixels
                    tiles_xy = cdiv(s["Og"], bm) * cdiv(s["K"], bn) * s["groups"]
                    assert (x, y) == (cdiv(s["Og"], bm) * cdiv(s["K"], bn), s["groups"]), where
                    splits = plan["splits"]
                    assert z == splits and splits >= 1, where
                    most = max(1, min(s["P"] // MIN_PIXELS_PER_SPLIT, 65535))
                    assert splits <= most, where
                    target = d.sm_count * max(residency, 2)
                    wave = d.sm_count * residency
                    blocks = tiles_xy * splits
                    if tiles_xy >= target:
                        assert splits == 1, where
                    elif splits < most:
                        # the GPU filled: 7/8 of the target in whole waves, or waves at least 7/8 full
                        within = blocks <= target and 8 * blocks >= 7 * target
                        balanced = blocks >= target and 8 * blocks >= 7 * cdiv(blocks, wave) * wave
                        assert within or balanced, where
                        if within:  # the most splits that stay within the target: one more would not
                            assert tiles_xy * (splits + 1) > target, where
                        else:  # the fewest splits that balance the waves, as fewer would not fill 7/8 of the target
                            fewer = tiles_xy * (splits - 1)
                            assert splits == 1 or not (fewer <= target and 8 * fewer >= 7 * target), where


def test_wgrad_grid_before_and_after_on_a_132_sm_gpu(probe):
    """Issue 26: ops/conv.py sized the splits for 64x64 tiles while the plan picks 128x128 for conv2/3/5: 80, 108 and
    84 blocks on 132 SMs.  The splits now come from the planned tile: at least 7/8 of two blocks per SM."""
    d = DEVICES["sm_90/132"]
    for layer, before in (("conv2", 80), ("conv3", 108), ("conv5", 84)):
        geometry = grid_table.at_batch(ALEXNET[layer], 128)
        plan = grid_table.plan(probe, WGRAD, geometry, BFLOAT16, True, d.sm_count, d.smem_optin, 2)
        assert plan["tile"] == 0, plan  # 128x128
        x, y, _ = plan["grid"]
        assert x * y * grid_table.splits_before(geometry, d.sm_count) == before
        assert 8 * x * y * plan["splits"] >= 7 * 2 * d.sm_count, (layer, plan)


def test_tf32_128x128_is_never_chosen_on_a_99kb_device(probe):
    """sm_86 / sm_89: the TF32 128x128 tile (110,592 B) does not fit 99 KB; the plan takes the fitting tile that
    wastes fewest columns (128x96 for multiples of 96, else 64x64) and says why.  bf16's 128x128 (61,440 B) fits."""
    d = DEVICES["sm_80/84"]
    for layer in ("conv2", "conv3", "conv5"):
        geometry = grid_table.at_batch(ALEXNET[layer], 128)
        for kind in (FORWARD, WGRAD):
            tf32 = grid_table.plan(probe, kind, geometry, FLOAT32, True, d.sm_count, d.smem_optin, 1)
            unknown = grid_table.plan(probe, kind, geometry, FLOAT32, True, d.sm_count, 0, 1)
            bf16 = grid_table.plan(probe, kind, geometry, BFLOAT16, True, d.sm_count, d.smem_optin, 1)
            assert unknown["tile"] == 0 and bf16["tile"] == 0, (layer, kind, unknown, bf16)
            assert tf32["tile"] != 0 and "shared memory" in tf32["reason"], (layer, kind, tf32)
    # conv3's 384 columns are a multiple of 96: 128x96, no wasted columns; conv2's 128: 64x64
    conv3 = grid_table.plan(probe, FORWARD, grid_table.at_batch(ALEXNET["conv3"], 128), FLOAT32, True, d.sm_count,
                            d.smem_optin, 1)
    conv2 = grid_table.plan(probe, FORWARD, grid_table.at_batch(ALEXNET["conv2"], 128), FLOAT32, True, d.sm_count,
                            d.smem_optin, 1)
    assert (conv3["tile"], conv2["tile"]) == (1, 2)


def test_a_grid_y_above_65535_takes_a_wider_tile(probe):
    """Og = 96 * 65537 columns (a multiple of 96, not of 128): 128x96 tiles would need y = 65537; the plan moves to
    128x128 (y = 49153), not to the narrower 64x64 (y = 98307).  Where no fitting tile brings y under the limit the
    plan keeps the widest fitting one and the launcher reports the grid."""
    wide = (1, 8, 1, 1, 96 * 65537, 1, 1, 1, 1, 0, 0, 1)
    for kind in (FORWARD, DGRAD):
        geometry = wide if kind == FORWARD else (1, 96 * 65537, 1, 1, 8, 1, 1, 1, 1, 0, 0, 1)
        plan = grid_table.plan(probe, kind, geometry, BFLOAT16, True, 132, 227 * KB, 1)
        assert plan["tile"] == 0 and plan["grid"][1] == 49153 and "65535" in plan["reason"], (kind, plan)
    # TF32 on 99 KB: 128x128 does not fit, no fitting tile has y <= 65535: the plan keeps the widest fitting tile
    plan = grid_table.plan(probe, FORWARD, wide, FLOAT32, True, 84, 99 * KB, 1)
    assert plan["tile"] == 1 and plan["grid"][1] == 65537, plan


def test_wgrad_splits_without_a_device_or_pixels(probe):
    """An unknown device (0 multiprocessors) or fewer than 2 x 1024 pixels: one split (nothing to fill, or splits
    that would be too short to pay for their partial sums)."""
    geometry = grid_table.at_batch(ALEXNET["conv3"], 128)
    assert grid_table.plan(probe, WGRAD, geometry, BFLOAT16, True, 0, 0, 0)["splits"] == 1
    for layer in ("conv2", "conv3", "conv4", "conv5"):  # batch 1: 729 or 169 pixels
        geometry = grid_table.at_batch(ALEXNET[layer], 1)
        assert grid_table.plan(probe, WGRAD, geometry, BFLOAT16, True, 132, 227 * KB, 2)["splits"] == 1


def test_bad_problems_are_reported_not_planned(probe):
    with pytest.raises(ValueError, match="groups must be >= 1 and divide"):
        grid_table.plan(probe, FORWARD, (1, 3, 8, 8, 4, 3, 3, 1, 1, 0, 0, 2), BFLOAT16, True, 132, 0, 1)
