"""2-D max-pooling: every backend against torch's own max_pool2d -- values bit-exact and gradients exactly
equal (fp16/bf16 gradients: torch's fp32 gradient rounded once), ties (ReLU'd inputs: whole windows of zeros)
and NaN routing included.

Runs on CPU in CI (C++ CPU kernels; Triton under TRITON_INTERPRET=1; torch) and, when a GPU is present,
the same tests on cuda plus the GPU-only ones at the bottom."""
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels
import alexnet_kernels.pool as pool
from alexnet_kernels import _extension
from alexnet_kernels.ops import pool as pool_ops

from common import (DEVICES, after_a_conv_under_autocast, assert_bad_arguments_raise, assert_double_backward_raises,
                    assert_forward_mode_ad_raises,
                    assert_keeps_memory_format, assert_unavailable_backends_say_why, compile_fullgraph,
                    compiled_and_eager, device_backend_params, gpu, gpu_backend_dtype_layout_shape_cases,
                    make_input, on_gpu_backends, opcheck_both_layouts, replayed_forward_and_backward, require,
                    saved_for_backward)

# (kernel_size, stride, padding, ceil_mode)
GEOMETRIES = [
    (3, 2, 0, False),                  # AlexNet's overlapping pool
    (3, 2, 1, True),                   # padding and ceil mode
    (2, 2, 0, False),                  # non-overlapping
    (3, 1, 1, False),                  # up to 9 windows cover an element
    ((5, 3), (2, 1), (1, 1), True),    # rectangular
    (3, None, 0, True),                # stride defaults to the kernel; ceil adds a partial window
    (1, 2, 0, False),                  # elements no window covers get zero gradient
]
SHAPES = [(2, 5, 11, 9), (1, 3, 8, 7), (5, 9, 10)]   # odd sizes; 3-D (C, H, W)


def geometry_id(g):
    return "k%s-s%s-p%s%s" % (g[0], g[1], g[2], "-ceil" if g[3] else "")


def relu_input(shape, dtype=torch.float32, device="cpu", layout="contiguous"):
    """ReLU'd random input: about half zeros, so many windows tie (several are all zero)."""
    return torch.relu(make_input(shape, torch.float64, "cpu", layout)).to(device=device, dtype=dtype)


def pool_and_grad(fn, x, dy):
    xr = x.detach().clone().requires_grad_()
    y = fn(xr)
    (dx,) = torch.autograd.grad(y, xr, dy)
    return y, dx


def assert_same(got, expected):
    """Bit-exact equality (NaN where expected has NaN), same dtype and shape."""
    assert got.dtype == expected.dtype and got.shape == expected.shape
    got, expected = got.detach().cpu(), expected.detach().cpu()
    assert torch.equal(got.isnan(), expected.isnan()), "NaN at different places"
    differ = got.nan_to_num(0.0) != expected.nan_to_num(0.0)
    assert not differ.any(), "%d of %d elements differ, max abs difference %g" % (
        int(differ.sum()), got.numel(), (got.double() - expected.double()).nan_to_num(0.0).abs().max())


def torch_reference(x, dy, kernel, stride, padding, ceil_mode, grad_dtype=None):
    """torch's max_pool2d and its gradient; grad_dtype=float32 computes the gradient in fp32 and rounds it
    once, as torch's CUDA kernels accumulate (exact for the values: the upcast keeps order and ties)."""
    if grad_dtype is None:
        return pool_and_grad(lambda t: F.max_pool2d(t, kernel, stride, padding, ceil_mode=ceil_mode), x, dy)
    y, dx = torch_reference(x.to(grad_dtype), dy.to(grad_dtype), kernel, stride, padding, ceil_mode)
    return y.to(x.dtype), dx.to(x.dtype)


def assert_pool_equals_torch(x, backend, kernel, stride, padding, ceil_mode):
    """Our max_pool2d's values and gradient equal torch's bit for bit on x."""
    y_ref = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode)
    dy = make_input(tuple(y_ref.shape), device=x.device, scale=1.0)
    y_ref, dx_ref = torch_reference(x, dy, kernel, stride, padding, ceil_mode)
    y, dx = pool_and_grad(lambda t: pool.max_pool2d(t, kernel, stride, padding, ceil_mode=ceil_mode,
                                                    backend=backend), x, dy)
    assert_same(y, y_ref)
    assert_same(dx, dx_ref)


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
@pytest.mark.parametrize("shape,layout", [
    pytest.param(s, layout, id="%s-%s" % ("x".join(map(str, s)), layout))
    for s in SHAPES for layout in ("contiguous", "channels_last", "strided")
    if not (layout == "channels_last" and len(s) == 3)])   # channels_last is a 4-D layout
def test_fp32_equals_torch_exactly(device, backend, geometry, shape, layout):
    require(backend, device)
    kernel, stride, padding, ceil_mode = geometry
    assert_pool_equals_torch(relu_input(shape, device=device, layout=layout), backend, kernel, stride, padding,
                             ceil_mode)


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=["fp16", "bf16", "fp64"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_other_dtypes_equal_torch(device, backend, dtype, layout):
    """Values are torch's bit for bit in every dtype; fp16/bf16 gradients are the fp32 sums rounded once
    (torch's CUDA accumulation), fp64 gradients torch's exactly."""
    require(backend, device, dtype, torch_cpu_low_precision=True)
    if dtype == torch.float64 and backend not in ("cpu", "torch"):
        pytest.skip("float64 runs on the C++ CPU kernels (for gradcheck) and torch only")
    x = relu_input((3, 6, 13, 11), dtype, device, layout)
    dy = make_input((3, 6, 6, 5), dtype, device, scale=1.0)
    # torch's CPU kernels accumulate fp16/bf16 gradients in the storage dtype: the torch backend is that.
    fp32_sums = dtype != torch.float64 and backend != "torch"
    y_ref, dx_ref = torch_reference(x, dy, 3, 2, 0, False, grad_dtype=torch.float32 if fp32_sums else None)
    y, dx = pool_and_grad(lambda t: pool.max_pool2d(t, 3, 2, backend=backend), x, dy)
    assert_same(y, y_ref)
    assert_same(dx, dx_ref)


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nan_and_inf_route_like_torch(device, backend, layout):
    """NaN wins its window (the last NaN when there are several), -inf/+inf compare as numbers, and a
    window of -inf only returns its first element -- all as torch does, gradients included."""
    require(backend, device)
    x = relu_input((2, 3, 9, 9), layout=layout)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = float("nan")        # two NaNs in one window
    x[0, 1, 4, 4] = float("inf")
    x[0, 2, 0:3, 0:3] = -float("inf")                   # a window of -inf only
    x[1, 1, 5, 6] = float("nan")
    x[1, 1, 5, 7] = float("inf")
    x = x.to(device)
    dy = make_input((2, 3, 4, 4), device=device, scale=1.0)
    dy[1, 2, 3, 3] = float("nan")                       # a NaN gradient must reach only its own maximum
    y_ref, dx_ref = torch_reference(x, dy, 3, 2, 0, False)
    y, dx = pool_and_grad(lambda t: pool.max_pool2d(t, 3, 2, backend=backend), x, dy)
    assert_same(y, y_ref)
    assert_same(dx, dx_ref)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_all_zero_windows_route_to_the_first_element(device, backend):
    require(backend, device)
    x = torch.zeros(1, 2, 7, 7, device=device)
    x[0, 1, 3, 3] = 1.0
    x.requires_grad_()
    y = pool.max_pool2d(x, 3, 2, padding=1, backend=backend)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    x_t = x.detach().clone().requires_grad_()
    (dx_t,) = torch.autograd.grad(F.max_pool2d(x_t, 3, 2, 1), x_t, torch.ones_like(y))
    assert torch.equal(dx, dx_t)
    # Windows start at -1, 1, 3, 5 (padding 1): each all-zero window routes to its first in-bounds element.
    starts = torch.tensor([0, 1, 3, 5])
    expected = torch.zeros(7, 7)
    expected[starts[:, None], starts[None, :]] = 1.0
    assert torch.equal(dx[0, 0].cpu(), expected)


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format], ids=["cl", "nchw"])
def test_output_and_gradient_keep_the_memory_format(device, backend, memory_format):
    require(backend, device)
    x = relu_input((2, 5, 9, 8), device=device).contiguous(memory_format=memory_format).requires_grad_()
    assert_keeps_memory_format(lambda t: pool.max_pool2d(t, 3, 2, backend=backend), x, memory_format)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_empty_batch(device, backend):
    require(backend, device)
    x = torch.randn(0, 4, 9, 9, device=device, requires_grad=True)
    y = pool.max_pool2d(x, 3, 2, backend=backend)
    assert y.shape == (0, 4, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_kernels_write_every_output(device, backend):
    """Poison the outputs, launch the op's forward and backward directly, and check every element."""
    require(backend, device)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = relu_input((3, 7, 13, 12), device=device).contiguous(memory_format=memory_format)
        y, offsets = torch.ops.alexnet_kernels.max_pool2d_forward(x, [3, 3], [2, 2], [1, 1], True, backend)
        y_ref, idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
        assert torch.equal(y, y_ref) and offsets.dtype == torch.uint8
        assert torch.equal(pool_ops.indices_from_offsets(offsets, 12, (3, 3), (2, 2), (1, 1)), idx)
        if backend == "torch":
            continue
        poisoned_y = torch.full_like(y, float("nan"))
        poisoned_offsets = torch.full_like(offsets, 255)
        dy = torch.randn_like(y)
        dx = torch.full_like(x, float("nan"))
        k, s, p = (3, 3), (2, 2), (1, 1)
        if backend == "triton":
            tk = pool_ops.triton_pool()
            tk.max_pool2d_forward(x, poisoned_y, poisoned_offsets, k, s, p)
            tk.max_pool2d_backward(dy, offsets, dx, k, s, p)
        else:
            cl = memory_format == torch.channels_last
            _extension.load().max_pool2d_forward(x, poisoned_y, poisoned_offsets, *k, *s, *p, cl)
            _extension.load().max_pool2d_backward(dy, offsets, dx, *k, *s, *p, cl)
        assert torch.equal(poisoned_y, y) and torch.equal(poisoned_offsets, offsets)
        x_t = x.detach().clone().requires_grad_()
        (dx_t,) = torch.autograd.grad(F.max_pool2d(x_t, 3, 2, 1, ceil_mode=True), x_t, dy)
        assert torch.equal(dx, dx_t)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_backward_offsets_naming_no_input_route_nowhere(device, backend):
    """The public backward ops with offsets that name no input element (>= kH * kW, or a padding position;
    no forward writes them) drop those gradients on every backend.  backend='torch' passed them on to
    torch's unchecked max-pool backward as out-of-range indices: a segmentation fault."""
    require(backend, device)
    k, s, p = [3, 3], [2, 2], [1, 1]
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = relu_input((2, 3, 9, 8), device=device).contiguous(memory_format=memory_format)
        y, offsets = torch.ops.alexnet_kernels.max_pool2d_forward(x, k, s, p, False, backend)
        dy = make_input(tuple(y.shape), device=device, scale=1.0).contiguous(memory_format=memory_format)
        bad = offsets.clone()
        bad[:, :, 0, 0] = 0       # the first window's top-left: padding
        bad[:, :, 1, 1] = 255     # past the 3x3 window
        bad[:, :, -1, -1] = 9
        keep = torch.ones_like(dy)
        keep[:, :, 0, 0] = keep[:, :, 1, 1] = keep[:, :, -1, -1] = 0
        cl = memory_format == torch.channels_last
        dx = torch.ops.alexnet_kernels.max_pool2d_backward(dy, bad, [9, 8], cl, k, s, p, False, backend)
        dx_ref = torch.ops.alexnet_kernels.max_pool2d_backward(dy * keep, offsets, [9, 8], cl, k, s, p, False,
                                                               backend)
        assert torch.equal(dx, dx_ref)
        args = (5, 1e-1, 0.75, 1.0, k, s, p, False, backend)
        z, z_offsets = torch.ops.alexnet_kernels.relu_lrn_max_pool2d_forward(x, *args)
        z_bad = z_offsets.clone()
        z_bad[:, :, 0, 0], z_bad[:, :, 1, 1], z_bad[:, :, -1, -1] = 0, 255, 9
        dxf = torch.ops.alexnet_kernels.relu_lrn_max_pool2d_backward(dy, x, z_bad, *args)
        dxf_ref = torch.ops.alexnet_kernels.relu_lrn_max_pool2d_backward(dy * keep, x, z_offsets, *args)
        assert torch.allclose(dxf, dxf_ref, rtol=1e-6, atol=1e-7)


def _available_memory_bytes():
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return 0


def test_cpu_offsets_naming_no_input_route_nowhere_on_a_plane_past_32768():
    """The C++ NCHW backward marked offsets >= kH * kW with row = col = -32768, which put ih, iw back inside
    the plane from window starts >= 32768 on: on a 32771 x 32771 plane the last window's gradient reached
    dx[0, 0].  fp32 (no float scratch plane): dx 4.3 GB, dy 1.1 GB, offsets 0.3 GB."""
    require("cpu", "cpu")
    if _available_memory_bytes() < 8 * 2**30:
        pytest.skip("needs 8 GiB of available memory (a 32771 x 32771 fp32 gradient)")
    H = 32771
    OH = (H - 3) // 2 + 1
    dy = torch.ones(1, 1, OH, OH)
    offsets = torch.full((1, 1, OH, OH), 255, dtype=torch.uint8)
    dx = torch.ops.alexnet_kernels.max_pool2d_backward(dy, offsets, [H, H], False, [3, 3], [2, 2], [0, 0], False,
                                                       "cpu")
    del dy, offsets
    assert not dx.any()


def _pool_recompute():
    """benchmarks/pool_recompute.py: the benchmark-only backward that re-derives the arg-max from x."""
    benchmarks = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if benchmarks not in sys.path:
        sys.path.insert(0, benchmarks)
    import pool_recompute
    return pool_recompute


@pytest.mark.parametrize("device", DEVICES)
def test_triton_recompute_variant_equals_torch(device):
    """The benchmark-only variant that saves x and re-derives the arg-max in the backward (measured against
    the saved offsets in benchmarks/bench_pool.py) gives torch's results too."""
    require("triton", device)
    pool_recompute = _pool_recompute()
    tk = pool_ops.triton_pool()
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = relu_input((2, 5, 11, 9), device=device).contiguous(memory_format=memory_format)
        dy = make_input((2, 5, 6, 5), device=device, scale=1.0)
        y_ref, dx_ref = torch_reference(x, dy, 3, 2, 1, True)
        y = torch.full_like(y_ref, float("nan"))
        dx = torch.full_like(x, float("nan"))
        tk.max_pool2d_forward(x, y, None, (3, 3), (2, 2), (1, 1))
        pool_recompute.max_pool2d_backward_recompute(x, dy, dx, (3, 3), (2, 2), (1, 1))
        assert_same(y, y_ref)
        assert_same(dx, dx_ref)


def _rows_alike(row, height):
    """(1, 1, height, len(row)) whose rows are all `row` (row stride 0): a plane of any size, len(row) memory."""
    return row.as_strided((1, 1, height, row.numel()), (0, 0, 0, 1))


def test_triton_plane_past_2_31_elements(monkeypatch):
    """One (n, c) plane of more than 2**31 outputs (forward) or inputs (backward): the plane's size and the
    flat positions must not wrap in int32 (they did: the kernels formed OH * OW and H * W in int32, so the
    plane's size went negative and every tile's mask was empty).  The planes' rows alias one row of memory,
    and only the grid's first program runs (the interpreter could not run the millions of them): its tile,
    256 positions of row 0, must equal the same kernel's result on a 3 x 513 input, whose first output row
    (and first input row's gradient) has those 256 positions from the same inputs."""
    require("triton", "cpu")
    tk = pool_ops.triton_pool()
    pool_recompute = _pool_recompute()
    k, s, p, lrn = (3, 3), (2, 2), (0, 0), (5, 1e-4, 0.75, 2.0)
    first_program = lambda *args: (1,)  # noqa: E731

    # Forward: H = W = 92683 -> OH = OW = 46341, OH * OW = 2147488281 >= 2**31.
    W = 92683
    row = relu_input((W,))
    small = _rows_alike(row[:513], 3)
    y_ref = torch.full((1, 1, 1, 256), float("nan"))
    offsets_ref = torch.full(y_ref.shape, 255, dtype=torch.uint8)
    z_ref, z_offsets_ref = y_ref.clone(), offsets_ref.clone()
    tk.max_pool2d_forward(small, y_ref, offsets_ref, k, s, p)
    tk.relu_lrn_max_pool2d_forward(small, z_ref, z_offsets_ref, *lrn, k, s, p)
    assert not y_ref.isnan().any() and not z_ref.isnan().any()
    big = _rows_alike(row, W)
    with monkeypatch.context() as m:
        m.setattr(tk, "_grid", first_program)
        for fn, args, expected in ((tk.max_pool2d_forward, (), (y_ref, offsets_ref)),
                                   (tk.relu_lrn_max_pool2d_forward, lrn, (z_ref, z_offsets_ref))):
            y = _rows_alike(torch.full((46341,), float("nan")), 46341)
            offsets = _rows_alike(torch.full((46341,), 255, dtype=torch.uint8), 46341)
            assert y.shape[2] * y.shape[3] >= 2**31
            fn(big, y, offsets, *args, k, s, p)
            tile = slice(0, 256)  # the first program's tile: one channel, 256 positions of row 0
            assert_same(y[..., 0, tile], expected[0][..., 0, tile])
            assert torch.equal(offsets[..., 0, tile], expected[1][..., 0, tile])

    # Backward: H = W = 46342 -> H * W = 2147580964 >= 2**31; OH = OW = 23170.  Input row 0 is covered by
    # output row 0 only, so its gradient equals the 3-row problem's.
    W, OW = 46342, 23170
    row = relu_input((W,))
    small = _rows_alike(row[:513], 3)
    dy_row = make_input((OW,), scale=1.0)
    dy_small = _rows_alike(dy_row[:256], 1)
    offsets_small = torch.empty((1, 1, 1, 256), dtype=torch.uint8)
    z_offsets_small = offsets_small.clone()
    tk.max_pool2d_forward(small, torch.empty(1, 1, 1, 256), offsets_small, k, s, p)
    tk.relu_lrn_max_pool2d_forward(small, torch.empty(1, 1, 1, 256), z_offsets_small, *lrn, k, s, p)
    dx_ref = torch.full(small.shape, float("nan"))
    dx_fused_ref, dx_recompute_ref = dx_ref.clone(), dx_ref.clone()
    tk.max_pool2d_backward(dy_small, offsets_small, dx_ref, k, s, p)
    tk.relu_lrn_max_pool2d_backward(small, dy_small, z_offsets_small, dx_fused_ref, *lrn, k, s, p)
    pool_recompute.max_pool2d_backward_recompute(small, dy_small, dx_recompute_ref, k, s, p)
    big, dy = _rows_alike(row, W), _rows_alike(dy_row, OW)
    # The big problem's offsets: the small one's for ow < 256 (all that input columns < 256 read), row 0's.
    offsets = _rows_alike(torch.cat([offsets_small.view(-1), torch.zeros(OW - 256, dtype=torch.uint8)]), OW)
    z_offsets = _rows_alike(torch.cat([z_offsets_small.view(-1), torch.zeros(OW - 256, dtype=torch.uint8)]), OW)
    with monkeypatch.context() as m:
        m.setattr(tk, "_grid", first_program)
        cases = ((lambda dx: tk.max_pool2d_backward(dy, offsets, dx, k, s, p), dx_ref),
                 (lambda dx: tk.relu_lrn_max_pool2d_backward(big, dy, z_offsets, dx, *lrn, k, s, p), dx_fused_ref),
                 (lambda dx: pool_recompute.max_pool2d_backward_recompute(big, dy, dx, k, s, p), dx_recompute_ref))
        for run, expected in cases:
            dx = _rows_alike(torch.full((W,), float("nan")), W)
            assert dx.shape[2] * dx.shape[3] >= 2**31
            run(dx)
            assert_same(dx[..., 0, :256], expected[..., 0, :256])


def test_gradcheck_float64_cpu_kernel():
    require("cpu", "cpu", torch.float64)
    # Distinct values (no ties) so that the max is differentiable at the point.
    x = (torch.randperm(2 * 3 * 9 * 8, dtype=torch.float64).reshape(2, 3, 9, 8) / 10).requires_grad_()
    for kernel, stride, padding, ceil_mode in [(3, 2, 0, False), (3, 2, 1, True), ((2, 3), (1, 2), 1, False)]:
        f = lambda t: pool.max_pool2d(t, kernel, stride, padding, ceil_mode=ceil_mode, backend="cpu")  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)


def test_backward_saves_one_byte_per_output_and_not_the_input():
    x = relu_input((2, 8, 13, 13)).requires_grad_()
    y, saved = saved_for_backward(lambda: pool.max_pool2d(x, 3, 2, backend="auto"))
    assert len(saved) == 1 and saved[0].dtype == torch.uint8 and saved[0].shape == y.shape
    assert sum(t.numel() * t.element_size() for t in saved) == y.numel()   # torch keeps 8 bytes per output
    y.sum().backward()


def test_double_backward_raises_instead_of_answering_zero():
    forwards = (lambda t: pool.max_pool2d(t, 3, 2, backend="auto"),
                lambda t: torch.ops.alexnet_kernels.max_pool2d_forward(t, [3, 3], [2, 2], [0, 0], False, "auto")[0])
    assert_double_backward_raises(forwards, relu_input((2, 3, 7, 7)).requires_grad_(), (2, 3, 3, 3))


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_opcheck(device, backend):
    require(backend, device)
    x = make_input((2, 4, 9, 8), device=device).requires_grad_()
    opcheck_both_layouts(torch.ops.alexnet_kernels.max_pool2d_forward.default, x,
                         ([3, 3], [2, 2], [1, 1], True, backend))
    y, offsets = torch.ops.alexnet_kernels.max_pool2d_forward(x.detach(), [3, 3], [2, 2], [1, 1], True, backend)
    torch.library.opcheck(torch.ops.alexnet_kernels.max_pool2d_backward.default,
                          (torch.randn_like(y), offsets, [9, 8], False, [3, 3], [2, 2], [1, 1], True, backend))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    backend = "cpu" if device == "cpu" else "auto"
    require(backend, device)

    def block(t):
        return pool.max_pool2d(torch.relu(t) * 2, 3, 2, backend=backend) + 1

    x = make_input((2, 8, 11, 11), device=device).requires_grad_()
    y, y_eager, g, g_eager = compiled_and_eager(compile_fullgraph(block), block, x)
    assert torch.equal(y, y_eager)
    assert torch.equal(g, g_eager)


def test_module_is_a_drop_in_for_torch():
    ref = torch.nn.MaxPool2d(3, 2)
    m = pool.MaxPool2d(3, 2)
    assert isinstance(m, torch.nn.MaxPool2d)
    assert repr(m) == "alexnet_kernels." + repr(ref)  # torch's arguments, under the package's name
    assert m.state_dict().keys() == ref.state_dict().keys()
    x = relu_input((2, 6, 13, 13))
    assert torch.equal(m(x), ref(x))
    m = pool.MaxPool2d((3, 2), stride=(2, 1), padding=1, ceil_mode=True)
    assert torch.equal(m(x), torch.nn.MaxPool2d((3, 2), stride=(2, 1), padding=1, ceil_mode=True)(x))


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_return_indices_from_our_offsets_equal_torch(device, backend, geometry, layout, monkeypatch):
    """return_indices=True: torch's int64 flat indices, from our kernels' offsets (torch's max_pool2d is not
    called unless backend='torch'), bit-equal with ties; y's gradient is ours; nn.MaxUnpool2d takes them."""
    require(backend, device)
    k, s, p, ceil = geometry
    for shape in ((2, 5, 11, 9), (5, 9, 10)):
        if layout == "channels_last" and len(shape) == 3:
            continue
        x = relu_input(shape, device=device, layout=layout).requires_grad_()
        y_t, idx_t = F.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
        dy = torch.randn_like(y_t)
        (dx_t,) = torch.autograd.grad(y_t, x, dy)
        with monkeypatch.context() as patch:
            if backend != "torch":
                def refuse(*args, **kwargs):
                    raise AssertionError("torch's max_pool2d was called")
                patch.setattr(F, "max_pool2d", refuse)
            y, idx = pool.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True, backend=backend)
            (dx,) = torch.autograd.grad(y, x, dy)
        assert idx.dtype == torch.int64 and idx.shape == idx_t.shape
        assert torch.equal(y, y_t) and torch.equal(idx, idx_t) and torch.equal(dx, dx_t)
        assert idx.is_contiguous(memory_format=torch.channels_last) == idx_t.is_contiguous(
            memory_format=torch.channels_last)
        unpool = torch.nn.MaxUnpool2d(k, s, p)
        assert torch.equal(unpool(y.detach(), idx, output_size=x.shape[-2:]),
                           unpool(y_t.detach(), idx_t, output_size=x.shape[-2:]))
    m = pool.MaxPool2d(k, s, p, return_indices=True, ceil_mode=ceil, backend=backend)
    assert torch.equal(m(x)[1], F.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)[1])


def test_return_indices_under_torch_compile():
    x = relu_input((2, 3, 9, 9))
    fn = torch.compile(lambda t: pool.max_pool2d(t, 3, 2, 1, return_indices=True), backend="eager", fullgraph=True)
    y, idx = fn(x)
    y_t, idx_t = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(y, y_t) and torch.equal(idx, idx_t)


def test_dilation_and_large_windows_delegate_to_torch():
    x = relu_input((2, 4, 11, 11))
    assert torch.equal(pool.max_pool2d(x, 3, 2, dilation=2), F.max_pool2d(x, 3, 2, dilation=2))
    y, idx = pool.max_pool2d(x, 3, 2, dilation=2, return_indices=True)
    y_t, idx_t = F.max_pool2d(x, 3, 2, dilation=2, return_indices=True)
    assert torch.equal(y, y_t) and torch.equal(idx, idx_t)
    big = make_input((1, 2, 20, 20))   # 17 x 17 = 289 > 256 window elements: torch computes it
    assert torch.equal(pool.max_pool2d(big, 17, 1), F.max_pool2d(big, 17, 1))


INTEGER_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]


def integer_input(shape, dtype, layout="contiguous"):
    """Random integers of the dtype's whole range, a third of them its lowest value (windows of only the
    lowest value tie from the start of the scan) and some its highest."""
    info = torch.iinfo(dtype)
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    x = torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)
    pick = torch.randint(0, 6, shape, generator=g)
    x = torch.where(pick < 2, torch.tensor(info.min, dtype=dtype), x)
    x = torch.where(pick == 5, torch.tensor(info.max, dtype=dtype), x)
    if layout == "channels_last" and len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_integer_dtypes_equal_torch_on_cpu(backend, dtype, layout, monkeypatch):
    """Integer max-pool on the CPU: torch's values and indices bit for bit, by the C++ CPU kernels (torch's
    max_pool2d is not called) for backend 'cpu' and 'auto'."""
    require(backend, "cpu")
    for geometry in GEOMETRIES:
        k, s, p, ceil = geometry
        for shape in ((2, 5, 11, 9), (5, 9, 10)):
            x = integer_input(shape, dtype, layout)
            y_t, idx_t = F.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
            with monkeypatch.context() as patch:
                if backend != "torch":
                    def refuse(*args, **kwargs):
                        raise AssertionError("torch's max_pool2d was called")
                    patch.setattr(F, "max_pool2d", refuse)
                for b in (backend, "auto") if backend == "cpu" else (backend,):
                    y = pool.max_pool2d(x, k, s, p, ceil_mode=ceil, backend=b)
                    y2, idx = pool.MaxPool2d(k, s, p, return_indices=True, ceil_mode=ceil, backend=b)(x)
                    assert y.dtype == dtype and torch.equal(y, y_t), geometry
                    assert torch.equal(y2, y_t) and torch.equal(idx, idx_t), geometry
                    assert y.is_contiguous(memory_format=torch.channels_last) == y_t.is_contiguous(
                        memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_integer_dtypes_on_backends_without_integer_kernels_raise(backend):
    x = integer_input((1, 2, 6, 6), torch.int32)
    # the error names the dtype and the backends that run it (the C++ CPU kernels, torch's own op)
    with pytest.raises(alexnet_kernels.BackendUnavailableError,
                       match=r"not available|does not support dtype torch\.int32.*backend='cpu' or backend='torch'"):
        pool.max_pool2d(x, 3, 2, backend=backend)


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint16, torch.uint32, torch.uint64, torch.complex64], ids=str)
def test_dtypes_torch_rejects_raise_torchs_error(dtype):
    x = torch.zeros(1, 2, 6, 6, dtype=dtype)
    with pytest.raises(Exception) as ours:
        pool.max_pool2d(x, 3, 2)
    with pytest.raises(Exception) as theirs:
        F.max_pool2d(x, 3, 2)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)


def test_integer_dtypes_under_torch_compile():
    x = integer_input((2, 3, 9, 9), torch.int16)
    fn = torch.compile(lambda t: pool.max_pool2d(t, 3, 2, 1, ceil_mode=True), backend="eager", fullgraph=True)
    assert torch.equal(fn(x), F.max_pool2d(x, 3, 2, 1, ceil_mode=True))


@pytest.mark.parametrize("args,exc,match", [
    (dict(input=torch.randn(2, 2, 2)), ValueError, "larger than the padded input"),
    (dict(input=torch.randn(1, 2, 2, 2), kernel_size=3, padding=0), ValueError, "larger than the padded input"),
    (dict(padding=2), ValueError, "at most half"),
    (dict(kernel_size=5, padding=3, dilation=2), ValueError, "at most half"),   # torch: of the kernel, not dilated
    (dict(input=torch.randn(4, 5)), ValueError, "3-D .* or 4-D"),
    (dict(input=torch.randn(1, 2, 3, 4, 5)), ValueError, "3-D .* or 4-D"),
    (dict(input=torch.zeros(2, 3, 8, 8, dtype=torch.bool)), NotImplementedError, "not implemented for 'Bool'"),
    (dict(input=torch.zeros(2, 3, 8, 8, dtype=torch.complex64)), (NotImplementedError, RuntimeError), "Complex"),
    (dict(input=torch.randn(2, 0, 8, 8)), ValueError, "only the batch dimension may be empty"),
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(stride=0), ValueError, "stride must be >= 1"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(kernel_size=(3, 3, 3)), TypeError, "kernel_size must be an int or a tuple of 1 or 2 ints"),
    (dict(kernel_size=2.5), TypeError, "kernel_size must be an int"),
    (dict(ceil_mode="yes"), TypeError, "ceil_mode must be a bool"),
    (dict(backend="cudnn"), ValueError, "backend must be one of"),
    (dict(input=[1.0]), TypeError, "must be a torch.Tensor"),
])
def test_bad_inputs_raise_clear_errors(args, exc, match):
    assert_bad_arguments_raise(pool.max_pool2d, dict(input=make_input((2, 3, 8, 8)), kernel_size=3, stride=2), args,
                               exc, match)


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((1, 1, 1, 1), 2, 2, 0),        # floor mode gives 0 rows, ceil mode 1: a window hanging off the end
    ((1, 48, 2, 2), 3, 2, 0),       # googlenet's 3x3/s2 ceil-mode pools on a 2x2 map (16x16 input)
    ((2, 3, 3, 5), (4, 2), 3, 1),   # a 4-row window over 3 rows (+1 padding), stride past the input
    ((1, 2, 1, 6), (2, 3), (1, 2), 1),
])
def test_ceil_mode_windows_that_start_inside_and_hang_off_the_end(device, backend, shape, kernel, stride,
                                                                    padding):
    """torch's rule: in ceil mode the last window must start inside the input or its left padding, and the
    floor-mode output may be 0 where the ceil-mode one is 1.  Every backend accepts what torch accepts (the
    C++ binding used to require the floor-mode size >= 1) and clips the window: values and gradients."""
    require(backend, device)
    assert_pool_equals_torch(relu_input(shape, device=device), backend, kernel, stride, padding, True)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_largest_stride_torch_takes(device, backend):
    """2**31 - 1 is the largest stride torch's pooling takes (a C int); every backend computes it."""
    require(backend, device)
    x = relu_input((2, 3, 5, 4), device=device)
    for ceil_mode in (False, True):
        dy = make_input((2, 3, 1, 1), device=device, scale=1.0)
        y_ref, dx_ref = torch_reference(x, dy, 2, 2**31 - 1, 1, ceil_mode)
        y, dx = pool_and_grad(lambda t: pool.max_pool2d(t, 2, 2**31 - 1, 1, ceil_mode=ceil_mode,
                                                        backend=backend), x, dy)
        assert_same(y, y_ref)
        assert_same(dx, dx_ref)


@pytest.mark.parametrize("backend", ["cpu", "triton", "torch"])
@pytest.mark.parametrize("name,value", [("stride", 2**40), ("stride", (1, 2**31)), ("kernel_size", 2**31),
                                        ("padding", 2**40)])
def test_too_large_arguments_are_named(backend, name, value):
    """torch raises for values past a C int ("cannot be converted to type int"); every backend says which
    argument is too large (the C++ binding answered "stride must be >= 1", Triton an int32 ValueError)."""
    x = make_input((1, 2, 5, 5))
    kwargs = dict(kernel_size=2, stride=2, padding=0)
    kwargs[name] = value
    with pytest.raises(RuntimeError):
        F.max_pool2d(x, **kwargs)
    with pytest.raises(ValueError, match="%s is too large" % name):
        pool.max_pool2d(x, **kwargs, backend=backend)


def test_binding_accepts_ceil_mode_sizes_and_names_a_too_large_stride():
    """The C++ binding's own shape check: an output the floor mode would not have (ceil mode) is taken, a
    stride beyond a C int is reported as too large."""
    require("cpu", "cpu")
    ext = _extension.load()
    x = torch.randn(1, 1, 1, 1)
    y, offsets = torch.empty(1, 1, 1, 1), torch.empty(1, 1, 1, 1, dtype=torch.uint8)
    ext.max_pool2d_forward(x, y, offsets, 2, 2, 2, 2, 0, 0, False)
    assert torch.equal(y, x) and offsets.item() == 0
    with pytest.raises(RuntimeError, match="OH = 2"):
        ext.max_pool2d_forward(x, torch.empty(1, 1, 2, 1), torch.empty(1, 1, 2, 1, dtype=torch.uint8),
                               2, 2, 2, 2, 0, 0, False)
    with pytest.raises(RuntimeError, match="stride is too large"):
        ext.max_pool2d_forward(x, y, offsets, 2, 2, 2**31, 2, 0, 0, False)


def test_backend_that_cannot_take_the_input_says_why():
    assert_unavailable_backends_say_why(lambda t, backend: pool.max_pool2d(t, 3, 2, backend=backend),
                                        make_input((2, 3, 8, 8)))


# ----------------------------------------------------------------------------------------------------
# GPU only


@gpu_backend_dtype_layout_shape_cases([(128, 96, 55, 55), (32, 256, 27, 27), (32, 256, 13, 13), (3, 33, 9, 7)])
def test_gpu_alexnet_shapes_equal_torch(backend, dtype, layout, shape):
    """On the GPU, torch's own CUDA kernels (same dtype) are the reference: exact values and gradients."""
    require(backend, "cuda", dtype)
    x = relu_input(shape, dtype, "cuda", layout)
    dy = make_input(shape[:2] + tuple(pool_ops.output_hw(shape[2:], (3, 3), (2, 2), (0, 0), False)), dtype,
                    "cuda", scale=1.0)
    y_ref, dx_ref = torch_reference(x, dy, 3, 2, 0, False)
    y, dx = pool_and_grad(lambda t: pool.max_pool2d(t, 3, 2, backend=backend), x, dy)
    assert_same(y, y_ref)
    assert_same(dx, dx_ref)


@on_gpu_backends
def test_gpu_cuda_graph_capture(backend):
    require(backend, "cuda")
    x = relu_input((4, 16, 13, 13), device="cuda").requires_grad_()
    dy = torch.randn(4, 16, 6, 6, device="cuda")
    y, dx = replayed_forward_and_backward(lambda t: pool.max_pool2d(t, 3, 2, backend=backend), x, dy,
                                          lambda: relu_input((4, 16, 13, 13), device="cuda"))
    y_ref, dx_ref = torch_reference(x.detach(), dy, 3, 2, 0, False)
    assert_same(y, y_ref)
    assert_same(dx, dx_ref)


@on_gpu_backends
def test_gpu_64bit_indexing(backend):
    """A tensor past 2**31 elements: the last sample must be right (32-bit offsets would wrap)."""
    require(backend, "cuda", torch.float16, gpu_memory_gib=16)
    x = torch.randn(2, 96, 4096, 2800, device="cuda", dtype=torch.float16)
    assert x.numel() > 2**31
    y = pool.max_pool2d(x, 3, 2, backend=backend)
    # The last 3 output rows read input rows 4088..4095.
    assert torch.equal(y[1:, :, -3:], F.max_pool2d(x[1:, :, 4088:], 3, 2))
    del x, y
    torch.cuda.empty_cache()


@on_gpu_backends
def test_gpu_plane_past_2_31_elements(backend):
    """One plane of more than 2**31 outputs (forward) and of inputs (backward); the last rows must be right."""
    require(backend, "cuda", torch.float16, gpu_memory_gib=48)
    x = torch.randn(1, 1, 92683, 92683, device="cuda", dtype=torch.float16)  # 46341**2 outputs
    y = pool.max_pool2d(x, 3, 2, backend=backend)
    assert y.shape[2] * y.shape[3] >= 2**31
    assert torch.equal(y[..., -3:, :], F.max_pool2d(x[..., -7:, :], 3, 2))
    del x, y
    x = torch.randn(1, 1, 46342, 46342, device="cuda", dtype=torch.float16, requires_grad=True)
    assert x.numel() >= 2**31
    y = pool.max_pool2d(x, 3, 2, backend=backend)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, dy)
    # The last 3 output rows' windows start at input rows 46334, 46336, 46338 (row o's at 2 o), and input
    # rows 46335.. are covered by those windows only.
    tail = x.detach()[..., -8:, :].clone().requires_grad_()
    (dx_tail,) = torch.autograd.grad(F.max_pool2d(tail, 3, 2), tail, dy[..., -3:, :])
    assert torch.equal(dx[..., -7:, :], dx_tail[..., -7:, :])
    del x, y, dy, dx
    torch.cuda.empty_cache()


@gpu
@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_gpu_autocast(amp_dtype):
    conv, h, y = after_a_conv_under_autocast(pool.MaxPool2d(3, 2), amp_dtype)
    assert torch.equal(y, F.max_pool2d(h, 3, 2))
    y.float().sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


# The C++ CPU forward reduces each input row to its row maxima, then scans the window's rows: ties must
# still go to the first maximum in row-major order (not column-major), NaNs to the last, on every path
# (interior windows, windows clipped by padding, planes and rows down to one element, channels_last,
# the AlexNet shapes whose rows span several vector widths).
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 2, 1, 7), (2, 3, 5, 1), (1, 4, 3, 3), (3, 5, 17, 34),
                                   (1, 96, 55, 55), (2, 256, 27, 27)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("geometry", [(3, 2, 0, False), (3, 2, 1, True), (2, 2, 0, False), (3, 1, 1, False)],
                         ids=geometry_id)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_row_maxima_ties_and_nans_equal_torch(shape, geometry, layout):
    require("cpu", "cpu")
    kernel, stride, padding, ceil_mode = geometry
    if min(shape[2:]) + 2 * padding < kernel:
        pytest.skip("no output window fits")
    g = torch.Generator().manual_seed(sum(shape))
    # Three values: nearly every window ties, across rows and across columns; a few NaNs and -infs.
    x = torch.randint(0, 3, shape, generator=g).float()
    x[torch.rand(shape, generator=g) < 0.02] = float("nan")
    x[torch.rand(shape, generator=g) < 0.02] = float("-inf")
    x = x.contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    y_ref, i_ref = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True)
    y, offsets = torch.ops.alexnet_kernels.max_pool2d_forward(x, [kernel] * 2, [stride] * 2, [padding] * 2,
                                                              ceil_mode, "cpu")
    assert_same(y, y_ref)
    expected = pool_ops.offsets_from_indices(i_ref, shape[3], [kernel] * 2, [stride] * 2, [padding] * 2)
    assert torch.equal(offsets.to(torch.int64), expected.to(torch.int64))


# The NCHW forward of short rows runs over whole flattened planes (row maxima at every position, window maxima
# at multiples of sW) when no window is clipped and sW divides sH * W; other geometries take the row path. Both
# must give torch's values and its first-maximum / last-NaN offsets: non-square windows and strides, a stride
# that does not divide sH * W, ceil_mode windows hanging off the end, rows of >= 64 outputs, large planes.
@pytest.mark.parametrize("shape,kernel,stride,ceil_mode", [
    ((2, 3, 9, 11), (2, 3), (1, 2), False),    # kH != kW, sH != sW: planes
    ((2, 3, 10, 13), (3, 2), (2, 1), False),   # sW = 1
    ((1, 2, 12, 13), (3, 3), (2, 3), False),   # sW = 3 does not divide sH * W = 26: rows
    ((1, 2, 12, 12), (3, 3), (1, 3), False),   # sW = 3 divides 12: planes
    ((1, 2, 14, 14), (3, 3), (2, 2), True),    # ceil_mode: the last window hangs off: rows
    ((1, 2, 5, 131), (3, 3), (2, 2), False),   # 65 outputs per row: rows
    ((1, 1, 300, 301), (3, 3), (2, 2), False),  # a plane past 2^16 elements: rows
    ((1, 1, 3, 3), (3, 3), (2, 2), False),     # one window: planes
    ((4, 1, 1, 5), (1, 2), (1, 2), False),     # one row per plane
], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_cpu_nchw_plane_and_row_paths_equal_torch(shape, kernel, stride, ceil_mode):
    require("cpu", "cpu")
    g = torch.Generator().manual_seed(sum(shape))
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x = torch.randint(0, 3, shape, generator=g).to(dtype)
        x[torch.rand(shape, generator=g) < 0.03] = float("nan")
        x[torch.rand(shape, generator=g) < 0.03] = float("-inf")
        y_ref, i_ref = F.max_pool2d(x, kernel, stride, 0, ceil_mode=ceil_mode, return_indices=True)
        y, offsets = torch.ops.alexnet_kernels.max_pool2d_forward(x, list(kernel), list(stride), [0, 0], ceil_mode,
                                                                  "cpu")
        assert_same(y, y_ref)
        expected = pool_ops.offsets_from_indices(i_ref, shape[3], list(kernel), list(stride), [0, 0])
        assert torch.equal(offsets.to(torch.int64), expected.to(torch.int64)), dtype


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_batch_one_is_the_same_on_one_and_two_threads(layout):
    """Batch 1 is split over planes and rows: the result must not depend on the split."""
    require("cpu", "cpu")
    x = make_input((1, 96, 55, 55), torch.float32, "cpu", layout)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(torch.ops.alexnet_kernels.max_pool2d_forward(x, [3, 3], [2, 2], [0, 0], False, "cpu"))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert_same(results[0][0], F.max_pool2d(x, 3, 2))


# Inference: without a gradient to compute (grad mode off, or an input that does not require grad) and without
# return_indices, max_pool2d runs alexnet_kernels::max_pool2d_values, which writes y alone (the C++ CPU kernels
# compute no offset: empty offsets select their values-only variants). Its values must be torch's on every path:
# NCHW planes (no clipped window) and rows (padding, ceil_mode, long rows), channels_last 3x3 in registers
# (float, double, integers) and the ring (half / bfloat16, clipped or non-3x3 windows), non-contiguous input.
VALUES_CASES = [
    ((2, 5, 13, 13), 3, 2, 0, False),     # AlexNet's geometry: NCHW planes, channels_last 3x3
    ((1, 96, 55, 55), 3, 2, 0, False),    # AlexNet's first pool
    ((2, 4, 14, 14), 3, 2, 1, True),      # padding and ceil mode: rows, ring
    ((1, 3, 5, 131), 3, 2, 0, False),     # 65 outputs per row: rows
    ((2, 3, 10, 9), (3, 2), (2, 1), 1, False),  # rectangular, padded
    ((2, 6, 9, 11), 2, 2, 0, False),      # 2x2: planes, ring
    ((0, 4, 9, 9), 3, 2, 0, False),       # empty batch
]
VALUES_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.uint8, torch.int32]


def ties_nans_and_infs(shape, dtype, layout, seed):
    """Three values (nearly every window ties), a few NaNs and -infs (floating point), in `layout`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, shape, generator=g).to(torch.float64)
    if dtype.is_floating_point:
        x[torch.rand(shape, generator=g) < 0.03] = float("nan")
        x[torch.rand(shape, generator=g) < 0.03] = float("-inf")
    x = x.to(dtype)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        return torch.cat([x, x], dim=3)[..., ::2]
    return x


def torch_values(x, kernel, stride, padding, ceil_mode):
    """F.max_pool2d's values; integers from an NCHW copy (torch 2.14 raises on some channels_last uint8 inputs,
    "Expected input_depth * input_height * input_width <= ..."), in x's layout."""
    ref = x if x.is_floating_point() else x.contiguous()
    y = F.max_pool2d(ref, kernel, stride, padding, ceil_mode=ceil_mode)
    return y.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and x.is_contiguous(
        memory_format=torch.channels_last) and not x.is_contiguous() else y


# backend "torch" on floating point only: torch raises on some channels_last uint8 inputs (see torch_values).
@pytest.mark.parametrize("backend,dtype", [
    pytest.param(b, d, id="%s-%s" % (b, d)) for b in ("cpu", "torch") for d in VALUES_DTYPES
    if b == "cpu" or d.is_floating_point])
@pytest.mark.parametrize("case", VALUES_CASES, ids=lambda c: "x".join(map(str, c[0])) + "-k%s-s%s-p%s%s" % (
    c[1], c[2], c[3], "-ceil" if c[4] else ""))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_values_only_forward_equals_torch(backend, case, dtype, layout, monkeypatch):
    """Under no_grad and for an input without requires_grad, max_pool2d runs the values-only op (never the
    forward with offsets) and returns torch's values bit for bit, in the input's layout."""
    require(backend, "cpu")
    shape, kernel, stride, padding, ceil_mode = case
    x = ties_nans_and_infs(shape, dtype, layout, seed=sum(shape))
    expected = torch_values(x, kernel, stride, padding, ceil_mode)

    def no_offsets(*args):
        raise AssertionError("the forward with offsets ran where no gradient is needed")

    monkeypatch.setattr(pool_ops.max_pool2d, "_apply", no_offsets)
    for grad_mode in (False, True):  # no_grad; grad mode on but x does not require grad
        with torch.set_grad_enabled(grad_mode):
            y = pool.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode, backend=backend)
            assert_same(y, expected)
            assert not y.requires_grad
            if layout == "channels_last" and shape[0] > 0:
                assert y.is_contiguous(memory_format=torch.channels_last)
    m = pool.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode, backend=backend)
    with torch.no_grad():
        assert_same(m(x), expected)


def test_values_only_kernels_write_every_output_and_no_offset():
    """The C++ CPU forward given empty offsets writes every element of y (poisoned first), torch's values,
    on each path; the offsets of the same call with offsets are unchanged by it."""
    require("cpu", "cpu")
    ext = _extension.load()
    for shape, k, s, p in [((3, 7, 13, 12), 3, 2, 1), ((3, 7, 13, 13), 3, 2, 0), ((2, 5, 27, 27), 3, 2, 0)]:
        for memory_format in (torch.contiguous_format, torch.channels_last):
            for dtype in (torch.float32, torch.bfloat16, torch.float64, torch.int16):
                x = ties_nans_and_infs(shape, dtype, "contiguous", seed=7).contiguous(memory_format=memory_format)
                expected = torch_values(x, k, s, p, True)
                with_offsets = torch.ops.alexnet_kernels.max_pool2d_forward(x, [k] * 2, [s] * 2, [p] * 2, True,
                                                                            "cpu")
                poisoned = torch.full_like(expected, 77 if not dtype.is_floating_point else float("nan"))
                ext.max_pool2d_forward(x, poisoned, torch.empty(0, dtype=torch.uint8), k, k, s, s, p, p,
                                       memory_format == torch.channels_last)
                assert_same(poisoned, expected)
                assert_same(with_offsets[0], expected)


def test_values_only_binding_rejects_bad_offsets():
    """Empty offsets ask max_pool2d_forward for the values only; offsets of another non-empty shape, a wrong
    dtype, and empty offsets for the fused block (which has no values-only kernels) raise."""
    require("cpu", "cpu")
    ext = _extension.load()
    x = torch.randn(1, 2, 9, 9)
    y = torch.empty(1, 2, 4, 4)
    with pytest.raises(RuntimeError, match="offsets must have y's shape"):
        ext.max_pool2d_forward(x, y, torch.empty(1, 2, 4, 3, dtype=torch.uint8), 3, 3, 2, 2, 0, 0, False)
    with pytest.raises(RuntimeError, match="offsets must be uint8"):
        ext.max_pool2d_forward(x, y, torch.empty(0), 3, 3, 2, 2, 0, 0, False)
    with pytest.raises(RuntimeError, match="offsets must have z's shape"):
        ext.relu_lrn_max_pool2d_forward(x, y, torch.empty(0, dtype=torch.uint8), 5, 1e-4, 0.75, 2.0, 3, 3, 2, 2,
                                        0, 0, False)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_with_grad_the_forward_keeps_offsets_and_backward_works(layout, monkeypatch):
    """An input that requires grad under grad mode takes the forward with offsets (never the values-only op),
    and its gradient is torch's."""
    require("cpu", "cpu")

    def values_only(*args):
        raise AssertionError("the values-only forward ran where a gradient is needed")

    monkeypatch.setattr(pool_ops, "max_pool2d_inference", values_only)
    x = relu_input((2, 5, 13, 13), layout=layout)
    assert_pool_equals_torch(x, "cpu", 3, 2, 0, False)
    assert_pool_equals_torch(x, "cpu", 3, 2, 1, True)


def test_values_only_module_under_torch_compile_fullgraph():
    """torch.compile(fullgraph=True) of the module under no_grad traces alexnet_kernels::max_pool2d_values (and
    not the forward with offsets) and gives the eager values; with grad it still traces the autograd op."""
    require("cpu", "cpu")
    m = pool.MaxPool2d(3, 2, backend="cpu")
    traced = []

    def counting_backend(gm, example_inputs):
        traced.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return gm.forward

    compiled = compile_fullgraph(m, backend=counting_backend)
    for layout in ("contiguous", "channels_last"):
        x = ties_nans_and_infs((2, 8, 13, 13), torch.float32, layout, seed=3)
        with torch.no_grad():
            assert_same(compiled(x), F.max_pool2d(x, 3, 2))
    assert traced and all(any("alexnet_kernels.max_pool2d_values" in n for n in t) for t in traced), traced
    assert not any("max_pool2d_forward" in n for t in traced for n in t), traced
    inductor = compile_fullgraph(m)
    x = ties_nans_and_infs((2, 8, 13, 13), torch.float32, "contiguous", seed=4)
    with torch.no_grad():
        assert_same(inductor(x), F.max_pool2d(x, 3, 2))
    xr = relu_input((2, 8, 13, 13)).requires_grad_()
    y, y_eager, g, g_eager = compiled_and_eager(compile_fullgraph(m), m, xr)
    assert torch.equal(y, y_eager) and torch.equal(g, g_eager)


@pytest.mark.parametrize("backend", ["cpu", "torch", "triton"])
def test_values_only_opcheck(backend):
    require(backend, "cpu")
    x = make_input((2, 4, 9, 8))
    for t in (x, x.to(memory_format=torch.channels_last)):
        torch.library.opcheck(torch.ops.alexnet_kernels.max_pool2d_values.default,
                              (t, [3, 3], [2, 2], [1, 1], True, backend))
    y = torch.ops.alexnet_kernels.max_pool2d_values(x, [3, 3], [2, 2], [1, 1], True, backend)
    assert_same(y, F.max_pool2d(x, 3, 2, 1, ceil_mode=True))


def test_forward_mode_ad_raises_instead_of_dropping_the_tangent():
    """With no gradient needed the functional skips autograd -- but not for an input carrying a forward-mode
    tangent: that takes the autograd op, which says it has no jvp."""
    assert_forward_mode_ad_raises(lambda t: pool.max_pool2d(t, 3, 2), torch.randn(1, 3, 9, 9))
