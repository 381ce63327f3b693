"""Seeded random sweeps of the arguments torch accepts, every backend against torch (values and gradients):

- max_pool2d: kernel, stride (None, an int or a pair), padding <= kernel / 2, ceil mode, sizes down to 1 (often
  smaller than the kernel: ceil mode's windows that hang off the end), 3-D and 4-D, NCHW / channels_last /
  strided, empty batches, fp32 and fp64 -- bit-exact with torch.  A second sweep draws past torch's limits
  (padding > kernel / 2, kernels larger than the padded input, dilation) and checks that we reject exactly
  what torch rejects.
- the fused ReLU -> LRN -> max-pool block: the same geometries with LRN sizes 1 .. C + 3 and past int32,
  against the float64 unfused chain.
- local_response_norm: sizes 1 .. C + 3 and past int32, 3-D to 5-D, both layouts, empty batches.
- dropout and bias_relu_dropout: p in {0, tiny, 0.5, 1}, training flags, shapes with 0 (the last dim too),
  generators, layouts.

Each sweep has a fixed seed (random.Random), so a failure reproduces; the case is in the assertion message.
A seeded sweep rather than hypothesis: no new dependency, and a fixed, bounded runtime (the Triton kernels
run under the interpreter in CI, so the tensors are small)."""
import math
import random

import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels.dropout as dr
import alexnet_kernels.fused as fused
import alexnet_kernels.lrn as lrn
import alexnet_kernels.pool as pool
from alexnet_kernels.ops import dropout as dropout_ops
from alexnet_kernels.ops import pool as pool_ops

from common import device_backend_params, make_input, rel_err, require

HUGE_LRN_SIZES = (2**31, 2**40, 2**63 - 1)


def layout_input(shape, rng, dtype=torch.float32, device="cpu", relu=False, distinct=False):
    """A fresh input of `shape` in a layout drawn from what the shape allows (channels_last is 4-D)."""
    layouts = ["contiguous", "strided"] + (["channels_last"] if len(shape) == 4 else [])
    layout = rng.choice(layouts)
    seed = rng.randrange(2**31)
    if distinct:   # no two values within ~1e-2 of each other: the maxima are unambiguous in any precision
        numel = math.prod(shape)
        g = torch.Generator().manual_seed(seed)
        values = (torch.randperm(max(numel, 1), generator=g, dtype=torch.float64)[:numel] - 0.4 * numel)
        x = make_input(shape, torch.float64, "cpu", layout, seed=seed)   # for the layout only
        x.copy_(values.view(shape) * (6.0 / max(numel, 1)))
    else:
        x = make_input(shape, torch.float64, "cpu", layout, seed=seed)
    if relu:
        x = torch.relu(x)   # about half zeros: whole windows tie
    return x.to(device=device, dtype=dtype), layout


def assert_same(got, expected, case):
    """Bit-exact equality (NaN where expected has NaN), same dtype and shape."""
    assert got.dtype == expected.dtype and got.shape == expected.shape, case
    got, expected = got.detach().cpu(), expected.detach().cpu()
    assert torch.equal(got.isnan(), expected.isnan()), case
    assert torch.equal(got.nan_to_num(0.0), expected.nan_to_num(0.0)), case


# ----------------------------------------------------------------------------------------------------
# max_pool2d


def draw_pool_geometry(rng, within_torch_limits=True):
    """(kernel_size, stride, padding, ceil_mode) in the forms torch takes (ints, pairs, stride None)."""
    kh = rng.randint(1, 5)
    kw = kh if rng.random() < 0.4 else rng.randint(1, 5)
    kernel = kh if kh == kw and rng.random() < 0.5 else (kh, kw)
    r = rng.random()
    stride = None if r < 0.15 else rng.randint(1, 4) if r < 0.55 else (rng.randint(1, 4), rng.randint(1, 4))
    extra = 0 if within_torch_limits else 1   # up to one past torch's padding limit
    ph, pw = rng.randint(0, kh // 2 + extra), rng.randint(0, kw // 2 + extra)
    padding = ph if ph == pw and rng.random() < 0.5 else (ph, pw)
    if not within_torch_limits:   # now and then a value torch refuses outright
        r = rng.random()
        kernel, stride, padding = ((0 if r < 0.03 else kernel), (0 if 0.03 <= r < 0.06 else stride),
                                   (-1 if 0.06 <= r < 0.09 else padding))
    return kernel, stride, padding, rng.random() < 0.6


def draw_pool_shape(rng, batched_only=False):
    hw = tuple(rng.randint(1, 3) if rng.random() < 0.4 else rng.randint(1, 8) for _ in range(2))
    C = rng.randint(1, 4)
    if not batched_only and rng.random() < 0.2:
        return (C,) + hw                          # unbatched (C, H, W)
    return (rng.choice([0, 1, 1, 2, 3]), C) + hw   # empty batches included


def torch_accepts_pool(shape, geometry, dilation=1):
    kernel, stride, padding, ceil_mode = geometry
    try:
        F.max_pool2d(torch.zeros(shape), kernel, stride, padding, dilation, ceil_mode)
    except RuntimeError:
        return False
    return True


def pool_cases(count, seed):
    """`count` (shape, geometry) pairs torch accepts, drawn with a fixed seed."""
    rng, cases = random.Random(seed), []
    while len(cases) < count:
        shape, geometry = draw_pool_shape(rng), draw_pool_geometry(rng)
        if torch_accepts_pool(shape, geometry):
            cases.append((shape, geometry))
    return cases


POOL_CASES = pool_cases(64, seed=1301)


def test_the_pool_sweep_covers_the_edge_cases():
    """The drawn cases include what the sweep is for (not only easy geometries)."""
    def floor_rows_zero(shape, g):
        kernel = g[0] if isinstance(g[0], tuple) else (g[0], g[0])
        padding = g[2] if isinstance(g[2], tuple) else (g[2], g[2])
        return any(shape[-2 + i] + 2 * padding[i] < kernel[i] for i in range(2))
    assert any(g[3] and floor_rows_zero(s, g) for s, g in POOL_CASES)   # ceil mode past the floor size
    assert any(len(s) == 3 for s, _ in POOL_CASES) and any(s[0] == 0 for s, _ in POOL_CASES if len(s) == 4)
    assert any(g[1] is None for _, g in POOL_CASES) and any(min(s[-2:]) == 1 for s, _ in POOL_CASES)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_max_pool2d_sweep_equals_torch(device, backend):
    require(backend, device)
    rng = random.Random(7)
    for shape, (kernel, stride, padding, ceil_mode) in POOL_CASES:
        dtype = torch.float64 if backend in ("cpu", "torch") and device == "cpu" and rng.random() < 0.25 \
            else torch.float32
        x, layout = layout_input(shape, rng, dtype, device, relu=True)
        case = dict(shape=shape, layout=layout, dtype=dtype, kernel=kernel, stride=stride, padding=padding,
                    ceil_mode=ceil_mode)
        xt = x.clone().requires_grad_()
        y_ref = F.max_pool2d(xt, kernel, stride, padding, ceil_mode=ceil_mode)
        dy = make_input(tuple(y_ref.shape), dtype, device, scale=1.0, seed=rng.randrange(2**31))
        (dx_ref,) = torch.autograd.grad(y_ref, xt, dy)
        xo = x.clone().requires_grad_()
        y = pool.max_pool2d(xo, kernel, stride, padding, ceil_mode=ceil_mode, backend=backend)
        (dx,) = torch.autograd.grad(y, xo, dy)
        assert_same(y, y_ref, case)
        assert_same(dx, dx_ref, case)


def test_max_pool2d_rejects_exactly_what_torch_rejects():
    """Geometries drawn past torch's limits too: ours raises ValueError/TypeError iff torch raises."""
    rng = random.Random(1302)
    accepted = rejected = 0
    for _ in range(400):
        shape, geometry = draw_pool_shape(rng), draw_pool_geometry(rng, within_torch_limits=False)
        dilation = 2 if rng.random() < 0.1 else 1
        x = torch.zeros(shape)
        ok = torch_accepts_pool(shape, geometry, dilation)
        kernel, stride, padding, ceil_mode = geometry
        try:
            pool.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, backend="torch")
            ours_ok = True
        except (ValueError, TypeError):
            ours_ok = False
        assert ours_ok == ok, dict(shape=shape, geometry=geometry, dilation=dilation, torch_accepts=ok)
        accepted += ok
        rejected += not ok
    assert accepted >= 100 and rejected >= 50   # both sides of the boundary are exercised


# ----------------------------------------------------------------------------------------------------
# The fused ReLU -> LRN -> max-pool block


def spanning_lrn_args(size, alpha, channels):
    """(n, alpha) for torch's composite: from n = 2C - 1 on every window spans all C channels, so n = 2C - 1
    with alpha / n kept is the same math (torch's composite would pad n channel planes)."""
    if size >= 2 * channels - 1:
        return 2 * channels - 1, alpha * (2 * channels - 1) / size
    return size, alpha


def draw_lrn_size(rng, channels):
    return rng.choice(HUGE_LRN_SIZES) if rng.random() < 0.2 else rng.randint(1, channels + 3)


def draw_lrn_params(rng):
    return rng.choice([1e-4, 1e-2, 0.5]), rng.choice([0.5, 0.75, 1.5]), rng.choice([1.0, 2.0])


def fused_cases(count, seed):
    rng, cases = random.Random(seed), []
    while len(cases) < count:
        shape, geometry = draw_pool_shape(rng, batched_only=True), draw_pool_geometry(rng)
        if torch_accepts_pool(shape, geometry):
            cases.append((shape, geometry, draw_lrn_size(rng, shape[1]), draw_lrn_params(rng)))
    return cases


FUSED_CASES = fused_cases(32, seed=1303)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_fused_block_sweep_matches_the_float64_chain(device, backend):
    """Distinct input values (no near-ties among the LRN outputs, so the float64 chain's maxima are ours);
    exact zero ties after the ReLU route by torch's rule in both."""
    require(backend, device)
    rng = random.Random(8)
    for shape, (kernel, stride, padding, ceil_mode), size, (alpha, beta, k) in FUSED_CASES:
        x, layout = layout_input(shape, rng, torch.float32, device, distinct=True)
        case = dict(shape=shape, layout=layout, size=size, alpha=alpha, beta=beta, k=k, kernel=kernel,
                    stride=stride, padding=padding, ceil_mode=ceil_mode)
        ref_size, ref_alpha = spanning_lrn_args(size, alpha, shape[1])
        x64 = x.detach().double().requires_grad_()
        z_ref = F.max_pool2d(F.local_response_norm(torch.relu(x64), ref_size, ref_alpha, beta, k), kernel,
                             stride, padding, ceil_mode=ceil_mode)
        dz = make_input(tuple(z_ref.shape), torch.float32, device, scale=1.0, seed=rng.randrange(2**31))
        (dx_ref,) = torch.autograd.grad(z_ref, x64, dz.double())
        xo = x.clone().requires_grad_()
        z = fused.relu_lrn_max_pool2d(xo, size, alpha, beta, k, kernel, stride, padding, ceil_mode,
                                      backend=backend)
        (dx,) = torch.autograd.grad(z, xo, dz)
        assert z.shape == z_ref.shape and z.dtype == x.dtype, case
        assert rel_err(z, z_ref) <= 1e-5, case
        assert rel_err(dx, dx_ref) <= 1e-5, case


# ----------------------------------------------------------------------------------------------------
# local_response_norm


def lrn_cases(count, seed):
    rng, cases = random.Random(seed), []
    for _ in range(count):
        C = rng.randint(1, 6)
        spatial = [(rng.randint(1, 6),), (rng.randint(1, 4), rng.randint(1, 4)),
                   (rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 3))][rng.randrange(3)]
        shape = (rng.choice([0, 1, 2, 3]), C) + spatial
        cases.append((shape, draw_lrn_size(rng, C), draw_lrn_params(rng)))
    return cases


LRN_CASES = lrn_cases(48, seed=1304)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_local_response_norm_sweep_matches_float64(device, backend):
    require(backend, device)
    rng = random.Random(9)
    for shape, size, (alpha, beta, k) in LRN_CASES:
        x, layout = layout_input(shape, rng, torch.float32, device)
        if len(shape) != 4 and rng.random() < 0.5:   # (N, *, C) storage of 3-D / 5-D inputs
            layout = "spatial_last"
            x = make_input(shape, torch.float32, device, layout, seed=rng.randrange(2**31))
        case = dict(shape=shape, layout=layout, size=size, alpha=alpha, beta=beta, k=k)
        ref_size, ref_alpha = spanning_lrn_args(size, alpha, shape[1])
        x64 = x.detach().double().requires_grad_()
        y_ref = F.local_response_norm(x64, ref_size, ref_alpha, beta, k)
        dy = make_input(shape, torch.float32, device, seed=rng.randrange(2**31))
        xo = x.clone().requires_grad_()
        y = lrn.local_response_norm(xo, size, alpha, beta, k, backend=backend)
        assert y.shape == x.shape and y.dtype == x.dtype, case
        if x.numel() == 0:
            continue
        (dx_ref,) = torch.autograd.grad(y_ref, x64, dy.double())
        (dx,) = torch.autograd.grad(y, xo, dy)
        assert rel_err(y, y_ref) <= 1e-5, case
        assert rel_err(dx, dx_ref) <= 1e-5, case


# ----------------------------------------------------------------------------------------------------
# dropout and bias_relu_dropout

DROPOUT_P = (0.0, 1e-30, 2.0**-26, 0.5, 1.0)    # tiny: below the 2**-24 resolution of the threshold
DROPOUT_SHAPES = ((0,), (3, 0), (0, 4), (2, 0, 5), (7,), (3, 5), (2, 3, 4, 5), (1, 1))


def dropout_keep(x, seed, p):
    """The reference keep mask for x (logical shape), keyed by x's memory order as every backend keys it."""
    order = dropout_ops.memory_order(x) or list(range(x.dim()))   # other strides are copied row-major
    return dropout_ops.from_flat(dropout_ops.keep_mask_torch(x.numel(), seed, p, x.device), x.shape, order)


def apply_keep(t, keep, p):
    """t * (keep ? 1/(1-p) : 0), computed in fp32 like the kernels."""
    scale = 1.0 / (1.0 - p) if p < 1.0 else 1.0
    return (t.float() * (keep.float() * scale)).to(t.dtype)


def dropout_cases(count, seed):
    rng = random.Random(seed)
    return [(rng.choice(DROPOUT_SHAPES), rng.choice(DROPOUT_P), rng.random() < 0.75, rng.random() < 0.5,
             rng.randrange(2**31)) for _ in range(count)]


DROPOUT_CASES = dropout_cases(40, seed=1305)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_dropout_sweep(device, backend):
    """torch's semantics for every argument: training=False or p = 0 return the input itself, p = 1 gives
    input * 0 (NaN stays NaN); otherwise each element is kept (x / (1 - p)) or zeroed by the documented
    mask, the gradient uses the same mask, and a generator reproduces it."""
    require(backend, device)
    rng = random.Random(10)
    for shape, p, training, with_generator, seed in DROPOUT_CASES:
        x, layout = layout_input(shape, rng, torch.float32, device)
        if x.numel():
            x[(0,) * x.dim()] = float("nan")
        case = dict(shape=shape, layout=layout, p=p, training=training, generator=with_generator)
        generator = torch.Generator(device).manual_seed(seed) if with_generator else None
        xo = x.clone().requires_grad_()
        y = dr.dropout(xo, p, training, generator=generator, backend=backend)
        if not training or p == 0.0:
            assert y is xo, case   # torch returns its input itself
            continue
        y_torch = F.dropout(x, p, training)
        assert y.shape == y_torch.shape == x.shape and y.dtype == x.dtype, case
        if p == 1.0:
            assert_same(y, x * 0, case)
        if not with_generator:
            continue
        keep = dropout_keep(x, dr.draw_seed(device, torch.Generator(device).manual_seed(seed)), p)
        assert_same(y, apply_keep(x, keep, p), case)
        dy = make_input(shape, torch.float32, device, seed=seed)
        (dx,) = torch.autograd.grad(y, xo, dy)
        assert_same(dx, apply_keep(dy, keep, p), case)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_bias_relu_dropout_sweep(device, backend):
    """dropout(relu(x + b)): torch's composite exactly where it is deterministic (training=False, p = 0,
    p = 1), the documented mask otherwise; gradients of input and bias; shapes with 0, the last dim too."""
    require(backend, device)
    rng = random.Random(11)
    for shape, p, training, with_generator, seed in DROPOUT_CASES:
        x = make_input(shape, device=device, seed=rng.randrange(2**31))
        b = make_input(shape[-1:], device=device, seed=rng.randrange(2**31))
        case = dict(shape=shape, p=p, training=training, generator=with_generator)
        generator = torch.Generator(device).manual_seed(seed) if with_generator else None
        xo, bo = x.clone().requires_grad_(), b.clone().requires_grad_()
        y = dr.bias_relu_dropout(xo, bo, p, training, generator=generator, backend=backend)
        dy = make_input(shape, device=device, seed=seed)
        dx, db = torch.autograd.grad(y, (xo, bo), dy)
        xt, bt = x.double().requires_grad_(), b.double().requires_grad_()
        deterministic = not training or p in (0.0, 1.0)
        if deterministic:
            y_ref = F.dropout(F.relu(xt + bt), p, training)
        elif with_generator:
            drawn = dr.draw_seed(device, torch.Generator(device).manual_seed(seed))
            keep = dropout_ops.keep_mask_torch(x.numel(), drawn, p, x.device).view(shape)
            y_ref = F.relu(xt + bt) * (keep.double() * (1.0 / (1.0 - p)))
        else:
            assert y.shape == x.shape, case
            continue
        dx_ref, db_ref = torch.autograd.grad(y_ref, (xt, bt), dy.double())
        assert y.shape == y_ref.shape and dx.shape == x.shape and db.shape == b.shape, case
        torch.testing.assert_close(y, y_ref.float(), rtol=1e-6, atol=1e-6, msg=str(case))
        torch.testing.assert_close(dx, dx_ref.float(), rtol=1e-6, atol=1e-6, msg=str(case))
        torch.testing.assert_close(db, db_ref.float(), rtol=1e-5, atol=1e-5, msg=str(case))


def test_dropout_arguments_torch_rejects_are_rejected():
    """The argument values torch refuses, refused alike (the exception type torch raises)."""
    x = make_input((4, 6))
    for p, training, exc in [(0.5, "yes", TypeError), (0.5, 1, TypeError), (0.5, None, TypeError),
                             (-0.1, True, ValueError), (1.1, True, ValueError), (float("nan"), True, ValueError),
                             (float("inf"), True, ValueError)]:
        torch_exc = RuntimeError if p != p else exc   # torch's range check lets NaN through to ATen's
        with pytest.raises(torch_exc):
            F.dropout(x, p, training)
        with pytest.raises(exc):
            dr.dropout(x, p, training)
        with pytest.raises(exc):
            dr.bias_relu_dropout(x, make_input((6,)), p, training)
