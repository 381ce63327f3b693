"""Cross-channel LRN: every backend against a float64 reference (torch's composite in float64).

Runs on CPU in CI (C++ CPU kernel; Triton under TRITON_INTERPRET=1; torch composite) and, when a GPU is
present, the same tests run the CUDA and Triton backends on cuda plus the cuDNN baseline."""
import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels
import alexnet_kernels.lrn as lrn
from alexnet_kernels import _backends, _extension, baselines
from alexnet_kernels.ops import lrn as lrn_ops

from common import (DEVICES, HAS_CUDA, after_a_conv_under_autocast, assert_bad_arguments_raise,
                    assert_double_backward_raises, assert_keeps_memory_format, assert_unavailable_backends_say_why,
                    assert_within_twice_torch_error, compile_fullgraph, compiled_and_eager, device_backend_params,
                    gpu, gpu_backend_dtype_layout_shape_cases, make_input, on_gpu_backends, opcheck_both_layouts,
                    rel_err, replayed_forward_and_backward, require, saved_for_backward)


def reference(x, size, alpha, beta, k, dy=None):
    """float64 forward (and input gradient) of torch's composite."""
    x64 = x.detach().to(torch.float64).requires_grad_(dy is not None)
    y = F.local_response_norm(x64, size, alpha, beta, k)
    if dy is None:
        return y, None
    (dx,) = torch.autograd.grad(y, x64, dy.to(torch.float64))
    return y, dx


def ours(x, size, alpha, beta, k, backend, dy=None):
    xr = x.detach().clone().requires_grad_(dy is not None)
    y = lrn.local_response_norm(xr, size, alpha, beta, k, backend=backend)
    if dy is None:
        return y, None
    (dx,) = torch.autograd.grad(y, xr, dy)
    return y, dx


CASES = [  # (shape, size, alpha, beta, k)
    ((2, 7, 5, 3), 5, 1e-2, 0.75, 2.0),       # odd C, odd n
    ((3, 1, 4, 5), 3, 1e-1, 0.75, 1.0),       # C = 1
    ((2, 4, 3, 3), 9, 1e-1, 0.5, 1.0),        # n > C
    ((2, 6, 5, 3), 4, 2e-2, 0.75, 2.0),       # even n: PyTorch's asymmetric window
    ((2, 5, 3, 3), 1, 1e-1, 1.5, 1.0),        # n = 1
    ((2, 6, 11), 3, 1e-2, 0.75, 2.0),         # 3-D
    ((2, 5, 3, 2, 3), 5, 1e-2, 0.75, 2.0),    # 5-D
    ((2, 9, 4, 5), 2, 1e-3, 0.2, 0.5),        # even n = 2
    ((1, 20, 3, 2), 12, 1e-2, 0.75, 2.0),     # long window, partially past the edges
]


def case_id(c):
    return "x".join(map(str, c[0])) + "-n%d" % c[1]


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("layout", ["contiguous", "spatial_last", "strided"])
def test_fp32_matches_float64_reference(device, backend, case, layout):
    require(backend, device)
    shape, size, alpha, beta, k = case
    x = make_input(shape, device=device, layout=layout)
    dy = make_input(shape, device=device, layout=layout, scale=1.0)
    y, dx = ours(x, size, alpha, beta, k, backend, dy)
    y_ref, dx_ref = reference(x, size, alpha, beta, k, dy)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert rel_err(y, y_ref) <= 1e-5
    assert rel_err(dx, dx_ref) <= 1e-5


# beta: 0.75's neighbours (the general power), the exact-form candidates 0.5, 1.0, 0.25, 1.5, and 0 (base^0 = 1).
BETAS = [0.74, 0.76, 0.5, 1.0, 1.5, 0.25, 0.0]


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("shape,size,layout", [
    ((2, 13, 6, 5), 5, "contiguous"),        # CPU: ring (NCHW)
    ((2, 20, 4, 3), 5, "spatial_last"),      # CPU: rows (channels_last)
    ((2, 9, 4, 5), 30, "contiguous"),        # CPU: planes (a window wider than the channels)
], ids=["ring", "rows", "planes"])
def test_fp32_matches_float64_at_many_betas(device, backend, beta, shape, size, layout):
    require(backend, device)
    x = make_input(shape, device=device, layout=layout, seed=int(beta * 100) + size)
    dy = make_input(shape, device=device, layout=layout, scale=1.0, seed=size)
    alpha, k = 0.5, 0.5   # the normaliser dominates: bases well away from k
    y, dx = ours(x, size, alpha, beta, k, backend, dy)
    y_ref, dx_ref = reference(x, size, alpha, beta, k, dy)
    assert rel_err(y, y_ref) <= 1e-5
    assert rel_err(dx, dx_ref) <= 1e-5


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("layout", ["contiguous", "spatial_last"])
def test_low_precision_within_twice_torch_error(device, backend, dtype, layout):
    """Flash-attention's rule: at most 2x as far from float64 as torch's own same-dtype result."""
    require(backend, device, dtype)
    shape, size, alpha, beta, k = (4, 13, 6, 5), 5, 1e-2, 0.75, 2.0
    x = make_input(shape, dtype, device, layout)
    dy = make_input(shape, dtype, device, layout, scale=1.0)
    y, dx = ours(x, size, alpha, beta, k, backend, dy)
    y_ref, dx_ref = reference(x, size, alpha, beta, k, dy)
    try:  # torch's own result in this dtype on this device
        y_t, dx_t = ours(x, size, alpha, beta, k, "torch", dy)
    except NotImplementedError:  # torch has no CPU fp16/bf16 avg_pool3d
        y_t, dx_t = None, None
    if y_t is None:  # no same-dtype torch result: the bound is the rounding of the exact result
        y_t, dx_t = y_ref.to(dtype), dx_ref.to(dtype)
    assert_within_twice_torch_error(dtype, (y, y_ref, y_t), (dx, dx_ref, dx_t))
    assert y.dtype == dtype and dx.dtype == dtype


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("shape,memory_format", [
    ((2, 5, 4, 3), torch.channels_last), ((2, 5, 3, 4, 2), torch.channels_last_3d),
    ((2, 5, 4, 3), torch.contiguous_format)], ids=["cl2d", "cl3d", "nchw"])
def test_output_keeps_memory_format(device, backend, shape, memory_format):
    require(backend, device)
    x = make_input(shape, device=device).contiguous(memory_format=memory_format).requires_grad_()
    y, dy, dx = assert_keeps_memory_format(lambda t: lrn.local_response_norm(t, 3, 1e-2, 0.75, 1.0, backend=backend),
                                           x, memory_format)
    y_ref, dx_ref = reference(x, 3, 1e-2, 0.75, 1.0, dy)
    assert rel_err(y, y_ref) <= 1e-5 and rel_err(dx, dx_ref) <= 1e-5


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_empty_inputs(device, backend):
    require(backend, device)
    for shape in [(0, 5, 3, 3), (2, 5, 0, 3), (0, 3, 4)]:
        x = torch.randn(shape, device=device, requires_grad=True)
        y = lrn.local_response_norm(x, 5, backend=backend)
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_nan_and_inf_propagate_like_torch(device, backend):
    require(backend, device)
    x = make_input((2, 9, 3, 4), device=device)
    x[0, 2, 1, 1] = float("nan")
    x[1, 6, 0, 2] = float("inf")
    x[1, 0, 2, 3] = -float("inf")
    y = lrn.local_response_norm(x, 5, 1e-2, 0.75, 2.0, backend=backend)
    y_ref = F.local_response_norm(x.double(), 5, 1e-2, 0.75, 2.0)
    assert torch.equal(torch.isnan(y).cpu(), torch.isnan(y_ref).cpu())
    finite = torch.isfinite(y_ref)
    assert torch.allclose(y.double()[finite], y_ref[finite], rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize("device,backend", device_backend_params())
def test_gradient_where_squares_overflow_is_torchs(device, backend):
    """|x| past sqrt(fp32 max): x*x and the base are inf.  torch's autograd (and the kernels) give finite
    gradients there; backend="torch" computed dy * base^(-beta-1) * base, i.e. 0 * inf = NaN (and 0 where
    base^(-beta-1) underflows)."""
    require(backend, device)
    x = torch.tensor([1e30, 1.0, 2.0, -3e19, 0.5, 1e19], device=device).view(1, 6, 1, 1)
    dy = torch.tensor([1.0, -2.0, 0.5, 1.5, 1.0, -1.0], device=device).view(1, 6, 1, 1)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, = torch.autograd.grad(lrn.local_response_norm(xa, 2, 1.0, 0.75, 1.0, backend=backend), xa, dy)
    ref, = torch.autograd.grad(F.local_response_norm(xb, 2, 1.0, 0.75, 1.0), xb, dy)
    assert torch.isfinite(ref).all() and torch.isfinite(got).all()
    assert torch.allclose(got, ref, rtol=1e-5, atol=0)

@pytest.mark.parametrize("device,backend", device_backend_params())
def test_kernels_write_every_output(device, backend):
    """Poison the outputs, launch the kernels directly, and check every element was written."""
    require(backend, device)
    if backend == "torch":
        pytest.skip("the torch composite allocates its own outputs")
    for channels_last in (False, True):
        N, C, S = 3, 37, 29
        x = torch.randn(N, S, C, device=device).transpose(1, 2) if channels_last else torch.randn(N, C, S, device=device)
        dy = torch.randn_like(x)
        y, dx = torch.full_like(x, float("nan")), torch.full_like(x, float("nan"))
        if backend == "triton":
            from alexnet_kernels.triton_kernels import lrn as tk
            tk.lrn_forward(x, y, 5, 1e-2, 0.75, 2.0, channels_last)
            tk.lrn_backward(x, dy, dx, 5, 1e-2, 0.75, 2.0, channels_last)
        else:
            _extension.load().lrn_forward(x, y, 5, 1e-2, 0.75, 2.0, channels_last)
            _extension.load().lrn_backward(x, dy, dx, 5, 1e-2, 0.75, 2.0, channels_last)
        y_ref, dx_ref = reference(x, 5, 1e-2, 0.75, 2.0, dy)
        assert not torch.isnan(y).any() and not torch.isnan(dx).any()
        assert rel_err(y, y_ref) <= 1e-5 and rel_err(dx, dx_ref) <= 1e-5



# The Triton backward's two kernels (triton_kernels/lrn.py): v2 forms each normaliser once per tile row
# (shifted adds with tl.gather), v1 recomputes them per output.  Every n from 1 past v2's widest halo (32
# channels each side, n = 33) to the rolled v1 path, odd C, sizes down to 1, both layouts.  The small tile
# cap (V2_MAX_ROWS) makes most cases span several channel tiles, so the halo rows between tiles are tested.
VARIANT_SHAPES = [(2, 13, 3, 1), (1, 1, 1, 1), (1, 3, 1, 2), (1, 40, 2, 1)]


def _variant_case(shape, size, channels_last, variant, device, dtype=torch.float32):
    from alexnet_kernels.triton_kernels import lrn as tk
    x = make_input(shape, dtype, device, "channels_last" if channels_last else "contiguous")
    dy = make_input(shape, dtype, device, "channels_last" if channels_last else "contiguous", scale=1.0)
    dx = torch.full_like(x, float("nan"))  # every output must be written
    # "rule": the launcher's choice (lrn_backward); "v2", "v1": those kernels' internal entry points.
    run = {"rule": tk.lrn_backward, "v2": tk.lrn_backward_v2, "v1": tk.lrn_backward_v1}[variant]
    run(x, dy, dx, size, 0.3, 0.75, 1.5, channels_last)
    _, dx_ref = reference(x, size, 0.3, 0.75, 1.5, dy)
    return dx, dx_ref


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", VARIANT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("max_rows", [16, 128])
def test_triton_backward_v2_every_window(monkeypatch, shape, channels_last, max_rows):
    require("triton", "cpu")
    from alexnet_kernels.triton_kernels import lrn as tk
    monkeypatch.setattr(tk, "V2_MAX_ROWS", max_rows)
    ran = []
    real_launch = tk.launch
    monkeypatch.setattr(tk, "launch", lambda kernel, *a, **k: (ran.append(kernel), real_launch(kernel, *a, **k)))
    C = shape[1]
    for size in list(range(1, 19)) + [24, 33, 34, 41]:
        halo = min(size // 2, C - 1) + min((size - 1) // 2, C - 1)
        ran.clear()
        dx, dx_ref = _variant_case(shape, size, channels_last, "rule", "cpu")
        # v2 while a tile of at most max_rows rows fits the halo, else the launcher runs v1
        fits = tk._v2_rows(C, halo) is not None
        assert ran == [tk.lrn_backward_kernel if fits else tk.lrn_backward_v1_kernel]
        assert fits or 4 * halo > max_rows
        assert not torch.isnan(dx).any(), (size, shape)
        assert rel_err(dx, dx_ref) <= 1e-5, (size, shape)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_triton_backward_v2_only_where_tile_offsets_fit_int32(channels_last):
    """v2 forms its elements' offsets from the tile's first element in 32 bits: its tile is offered only
    where the farthest one, (rows - 1) * stride_c + (positions - 1) * stride_s, stays below 2**31."""
    from alexnet_kernels.triton_kernels import lrn as tk
    halo = 4
    # (C, S): AlexNet's planes, then NCHW planes (stride_c = S) and NHWC channel counts (stride_s = C) on
    # either side of the limit
    cases = [(96, 55 * 55), (256, 27 * 27), (96, 2**24 - 2**20), (96, 2**24 + 2**20), (2**26, 64), (2**28, 64)]
    offered = []
    for C, S in cases:
        cfg = tk._v2_config(C, S, halo, channels_last)
        rows = tk._v2_rows(C, halo)
        block_s = min(max(1, tk.V2_ELEMENTS // rows), 1 << (S - 1).bit_length())
        stride_c, stride_s = (1, C) if channels_last else (S, 1)
        assert (cfg is not None) == ((rows - 1) * stride_c + (block_s - 1) * stride_s < 2**31), (C, S, cfg)
        assert cfg is None or cfg[:2] == (rows, block_s)
        offered.append(cfg is not None)
    assert offered[:2] == [True, True] and not all(offered)   # AlexNet takes v2; some plane here does not


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("size", [1, 2, 5, 16, 17])
def test_triton_backward_v1_kept_as_benchmark_provider(size, channels_last):
    require("triton", "cpu")
    dx, dx_ref = _variant_case((2, 13, 3, 1), size, channels_last, "v1", "cpu")
    assert not torch.isnan(dx).any() and rel_err(dx, dx_ref) <= 1e-5


def test_triton_backward_variant_by_rule(monkeypatch):
    """The launcher picks the kernel from the shape and window (no process-wide switch): v2 for AlexNet's
    n = 5, v1 for a window wider than v2's widest halo; the internal entry points run their own kernel."""
    from alexnet_kernels.triton_kernels import lrn as tk
    calls = []
    monkeypatch.setattr(tk, "launch", lambda kernel, *a, **k: calls.append(kernel))
    x = torch.empty(2, 80, 3, 3)
    tk.lrn_backward(x, x, x, 5, 1e-4, 0.75, 2.0, False)
    tk.lrn_backward(x, x, x, 2 * tk.V2_MAX_ROWS // 4 + 3, 1e-4, 0.75, 2.0, False)
    tk.lrn_backward_v1(x, x, x, 5, 1e-4, 0.75, 2.0, False)
    assert tk.lrn_backward_v2(x, x, x, 5, 1e-4, 0.75, 2.0, False)
    assert not tk.lrn_backward_v2(x, x, x, 2 * tk.V2_MAX_ROWS // 4 + 3, 1e-4, 0.75, 2.0, False)
    assert calls == [tk.lrn_backward_kernel, tk.lrn_backward_v1_kernel, tk.lrn_backward_v1_kernel,
                     tk.lrn_backward_kernel]
    assert not any(hasattr(tk, name) for name in ("backward_variant", "backward_variant_in_use"))


def test_triton_backward_v2_low_precision():
    """fp16 in, fp32 accumulation: at most twice as far from float64 as the float64 result rounded to fp16
    (torch has no CPU fp16 LRN to compare with), as test_low_precision_within_twice_torch_error."""
    dtype = torch.float16
    require("triton", "cpu", dtype)
    for channels_last, variant in ((False, "v2"), (True, "v2"), (False, "v1")):
        dx, dx_ref = _variant_case((2, 13, 3, 3), 5, channels_last, variant, "cpu", dtype)
        assert rel_err(dx, dx_ref) <= 2 * rel_err(dx_ref.to(dtype), dx_ref) + torch.finfo(dtype).eps / 16

def test_gradcheck_float64_cpu_kernel():
    require("cpu", "cpu", torch.float64)
    for shape, size in [((2, 6, 3, 2), 5), ((1, 5, 4), 4), ((2, 3, 2, 2), 1)]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        f = lambda t: lrn.local_response_norm(t, size, 0.3, 0.75, 1.0, backend="cpu")  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)


def test_backward_saves_only_the_input():
    """Autograd keeps exactly one tensor, the input itself: no scale or output tensor."""
    x = make_input((2, 8, 5, 5)).requires_grad_()
    y, saved = saved_for_backward(lambda: lrn.local_response_norm(x, 5, 1e-2, 0.75, 2.0, backend="auto"))
    assert len(saved) == 1 and saved[0] is x
    assert sum(t.numel() * t.element_size() for t in saved) == x.numel() * x.element_size()
    y.sum().backward()


def test_double_backward_raises_instead_of_answering_zero():
    forwards = (lambda t: lrn.local_response_norm(t, 3, backend="auto"),
                lambda t: torch.ops.alexnet_kernels.lrn_forward(t, 3, 1e-4, 0.75, 1.0, "auto"))
    assert_double_backward_raises(forwards, make_input((2, 5, 3, 3)).requires_grad_(), (2, 5, 3, 3))


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_opcheck(device, backend):
    require(backend, device)
    x = make_input((2, 6, 3, 4), device=device).requires_grad_()
    opcheck_both_layouts(torch.ops.alexnet_kernels.lrn_forward.default, x, (5, 1e-2, 0.75, 2.0, backend))
    dy = torch.randn_like(x)
    torch.library.opcheck(torch.ops.alexnet_kernels.lrn_backward.default,
                          (dy, x.detach(), 5, 1e-2, 0.75, 2.0, backend))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    backend = "cpu" if device == "cpu" else "auto"
    require("cpu" if device == "cpu" else "torch", device)

    def block(t):
        return torch.relu(lrn.local_response_norm(torch.relu(t) * 2, 5, 1e-2, 0.75, 2.0, backend=backend)) + 1

    x = make_input((2, 8, 5, 5), device=device).requires_grad_()
    y, y_eager, g, g_eager = compiled_and_eager(compile_fullgraph(block), block, x)
    assert torch.allclose(y, y_eager, rtol=1e-6, atol=1e-6)
    assert torch.allclose(g, g_eager, rtol=1e-5, atol=1e-6)



def test_torch_compile_dynamic_fullgraph_module():
    """torch.compile(dynamic=True) makes a module's float attributes SymFloats: the argument check must
    trace them (math.isfinite did not: fullgraph=True raised), new shapes and a changed alpha must rerun."""
    require("cpu", "cpu")
    m = lrn.LocalResponseNorm(5, 1e-2, 0.75, 2.0, backend="cpu")
    compiled = compile_fullgraph(m, dynamic=True)
    for shape in ((2, 8, 5, 5), (3, 6, 7, 4)):
        x = make_input(shape).requires_grad_()
        y, y_eager, g, g_eager = compiled_and_eager(compiled, m, x)
        assert torch.equal(y, y_eager)
        assert torch.equal(g, g_eager)
    m.alpha = 0.5  # a guard on the traced alpha: the compiled module follows the new value
    y = compiled(x)
    assert torch.equal(y, m(x))
    assert rel_err(y, reference(x, 5, 0.5, 0.75, 2.0)[0]) <= 1e-5

def test_module_is_a_drop_in_for_torch():
    ref = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    m = lrn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    assert isinstance(m, torch.nn.LocalResponseNorm)
    # torch's arguments in the repr, under the package's name (print(model) tells the two apart).
    assert repr(ref) == "LocalResponseNorm(5, alpha=0.0001, beta=0.75, k=2.0)"
    assert repr(m) == "alexnet_kernels." + repr(ref)
    assert m.state_dict().keys() == ref.state_dict().keys()
    m.load_state_dict(ref.state_dict())
    x = make_input((2, 10, 6, 6), scale=30.0)
    y_ref, _ = reference(x, 5, 1e-4, 0.75, 2.0)
    assert rel_err(m(x), y_ref) <= 1e-5
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 10, 3), lrn.LocalResponseNorm(3))
    seq.load_state_dict(torch.nn.Sequential(torch.nn.Conv2d(3, 10, 3), torch.nn.LocalResponseNorm(3)).state_dict())


def spanning_reference(x, size, alpha, beta, k, dy=None):
    """reference() for any n: from n = 2C - 1 on every window spans all C channels, so n = 2C - 1 with alpha
    rescaled (alpha / n kept) is the same math -- without torch's composite padding n channel planes."""
    C = x.shape[1]
    if size >= 2 * C - 1:
        size, alpha = 2 * C - 1, alpha * (2 * C - 1) / size
    return reference(x, size, alpha, beta, k, dy)


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("shape,layout,size", [
    ((2, 5, 3, 3), "contiguous", 2**31), ((2, 5, 3, 3), "spatial_last", 2**40),
    ((2, 5, 3, 3), "contiguous", 2**63 - 1), ((3, 1, 7), "contiguous", 2**31),
    ((1, 20, 2, 3), "contiguous", 2**31)])   # a clipped window of 39 channels: the long-window paths
def test_sizes_past_int32_agree_on_every_backend(device, backend, shape, layout, size):
    """n = 2**31 used to be refused by the C++ binding ("size must be >= 1", an int32 overflow) while Triton
    answered; torch's composite would pad n planes.  The window's reach is clipped to C - 1 everywhere."""
    require(backend, device)
    x = make_input(shape, device=device, layout=layout)
    dy = make_input(shape, device=device)
    y, dx = ours(x, size, 0.5, 0.75, 1.0, backend, dy)
    y_ref, dx_ref = spanning_reference(x, size, 0.5, 0.75, 1.0, dy)
    assert rel_err(y, y_ref) <= 1e-5 and rel_err(dx, dx_ref) <= 1e-5


def test_torch_backend_clipped_window_is_torchs_composite_bit_for_bit():
    """The "torch" backend clips the zero padding of windows longer than the channels; the values stay
    F.local_response_norm's exactly (same ops, the same non-zero terms in the same order)."""
    for shape in [(2, 5, 3, 3), (2, 4, 7), (1, 3, 2, 2, 2), (2, 1, 4, 4)]:
        x = make_input(shape)
        C = shape[1]
        for size in [C + 1, C + 2, C + 3, 2 * C - 1, 2 * C, 2 * C + 5, 1000]:
            for dtype in (torch.float32, torch.float64):
                xd = x.to(dtype)
                assert torch.equal(lrn_ops.torch_local_response_norm(xd, size, 0.1, 0.75, 1.0),
                                   F.local_response_norm(xd, size, 0.1, 0.75, 1.0)), (shape, size, dtype)


@pytest.mark.parametrize("bad,exc,match", [
    (dict(input=torch.randn(4, 5)), ValueError, "3 or more dimensions"),
    (dict(size=2**63), ValueError, "size is too large"),
    (dict(input=torch.randint(0, 5, (2, 3, 4, 4))), TypeError, "floating-point"),
    (dict(input=torch.ones(2, 3, 4, dtype=torch.bool)), TypeError, "floating-point"),
    (dict(size=0), ValueError, "size must be >= 1"),
    (dict(size=2.5), TypeError, "size must be an int"),
    (dict(alpha=float("nan")), ValueError, "alpha must be finite"),
    (dict(beta=float("inf")), ValueError, "beta must be finite"),
    (dict(alpha=-1e-4), ValueError, "alpha must be >= 0"),
    (dict(k=0.0), ValueError, "k must be > 0"),
    (dict(k="2"), TypeError, "k must be a real number"),
    (dict(backend="cudnn"), ValueError, "backend must be one of"),
    (dict(input=[1.0, 2.0]), TypeError, "must be a torch.Tensor"),
])
def test_bad_inputs_raise_clear_errors(bad, exc, match):
    good = dict(input=make_input((2, 5, 3, 3)), size=5, alpha=1e-4, beta=0.75, k=2.0)
    assert_bad_arguments_raise(lrn.local_response_norm, good, bad, exc, match)


def test_backend_that_cannot_take_the_input_says_why():
    x = make_input((2, 5, 3, 3))
    assert_unavailable_backends_say_why(lambda t, backend: lrn.local_response_norm(t, 5, backend=backend), x)
    if HAS_CUDA:
        with pytest.raises(alexnet_kernels.BackendUnavailableError, match="cpu tensors"):
            lrn.local_response_norm(x.cuda(), 5, backend="cpu")


def test_auto_and_default_backend(monkeypatch):
    x = make_input((2, 5, 3, 3))
    assert _backends.default_backend() in _backends.BACKENDS
    auto = lrn_ops.BACKENDS.resolve("auto", x, "t")
    assert auto == ("cpu" if _extension.load() is not None else "torch")
    assert lrn_ops.BACKENDS.resolve("auto", x.double(), "t") in ("cpu", "torch")
    previous = _backends.default_backend()
    try:
        alexnet_kernels.set_default_backend("torch")
        assert lrn_ops.BACKENDS.resolve(None, x, "t") == "torch"
        with pytest.raises(ValueError, match="backend must be one of"):
            alexnet_kernels.set_default_backend("fastest")
    finally:
        alexnet_kernels.set_default_backend(previous)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_backends_agree(device, backend):
    """The three implementations give the same numbers (fp32, within rounding)."""
    require(backend, device)
    x = make_input((3, 17, 7, 5), device=device, layout="channels_last")
    dy = make_input((3, 17, 7, 5), device=device, scale=1.0)
    y, dx = ours(x, 5, 1e-2, 0.75, 2.0, backend, dy)
    y_t, dx_t = ours(x, 5, 1e-2, 0.75, 2.0, "torch", dy)
    torch.testing.assert_close(y, y_t, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(dx, dx_t, rtol=2e-5, atol=1e-6)


def test_cpu_autocast_bf16():
    """Under CPU autocast the conv yields bf16 and LRN runs in bf16 on the C++ kernel, with gradients."""
    require("cpu", "cpu", torch.bfloat16)
    conv = torch.nn.Conv2d(3, 16, 3)
    m = lrn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    x = torch.randn(2, 3, 11, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        y = m(h)
        # torch's composite differs (docs/lrn.md): autocast runs its avg_pool3d in float32, so it returns float32.
        assert F.local_response_norm(h, 5, 1e-4, 0.75, 2.0).dtype == torch.float32
    assert h.dtype == y.dtype == torch.bfloat16
    y.float().sum().backward()
    y_ref, _ = reference(h, 5, 1e-4, 0.75, 2.0)
    assert rel_err(y, y_ref) <= 2 * rel_err(y_ref.to(torch.bfloat16), y_ref) + 1e-4
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


# ----------------------------------------------------------------------------------------------------
# GPU only


@gpu_backend_dtype_layout_shape_cases([(128, 96, 55, 55), (32, 256, 13, 13), (7, 96, 27, 27), (3, 33, 9, 7)])
def test_gpu_alexnet_shapes(backend, dtype, layout, shape):
    require(backend, "cuda", dtype)
    x = make_input(shape, dtype, "cuda", layout)
    dy = make_input(shape, dtype, "cuda", layout, scale=1.0)
    y, dx = ours(x, 5, 1e-4, 0.75, 2.0, backend, dy)
    y_ref, dx_ref = reference(x, 5, 1e-4, 0.75, 2.0, dy)
    y_t, dx_t = ours(x, 5, 1e-4, 0.75, 2.0, "torch", dy)
    if dtype == torch.float32:
        assert rel_err(y, y_ref) <= 1e-5 and rel_err(dx, dx_ref) <= 1e-5
    else:
        assert_within_twice_torch_error(dtype, (y, y_ref, y_t), (dx, dx_ref, dx_t))


@on_gpu_backends
def test_gpu_cuda_graph_capture(backend):
    require(backend, "cuda")
    x = make_input((4, 16, 9, 9), device="cuda").requires_grad_()
    dy = torch.randn_like(x)
    y, dx = replayed_forward_and_backward(lambda t: lrn.local_response_norm(t, 5, 1e-2, 0.75, 2.0, backend=backend),
                                          x, dy, lambda: make_input((4, 16, 9, 9), device="cuda"))
    y_ref, dx_ref = reference(x, 5, 1e-2, 0.75, 2.0, dy)
    assert rel_err(y, y_ref) <= 1e-5 and rel_err(dx, dx_ref) <= 1e-5


@gpu
@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_gpu_autocast(amp_dtype):
    conv, h, y = after_a_conv_under_autocast(lrn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), amp_dtype)
    y.float().sum().backward()
    y_ref, _ = reference(h, 5, 1e-4, 0.75, 2.0)
    assert rel_err(y, y_ref) <= 4 * torch.finfo(amp_dtype).eps
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


@on_gpu_backends
def test_gpu_64bit_indexing(backend):
    """A tensor past 2**31 elements: the last sample must be right (32-bit offsets would wrap)."""
    require(backend, "cuda", torch.float16, gpu_memory_gib=16)
    N, C, H, W = 2, 96, 4096, 2800  # 2.2e9 elements, 4.4 GB in fp16
    x = torch.randn(N, C, H, W, device="cuda", dtype=torch.float16)
    assert x.numel() > 2**31
    y = lrn.local_response_norm(x, 5, 1e-2, 0.75, 2.0, backend=backend)
    tail = slice(H - 3, H)
    y_ref = F.local_response_norm(x[1:, :, tail].double(), 5, 1e-2, 0.75, 2.0)
    assert rel_err(y[1:, :, tail], y_ref) <= 2e-3
    del x, y
    torch.cuda.empty_cache()


@gpu
@pytest.mark.parametrize("size", [1, 3, 4, 5, 16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gpu_cudnn_baseline(size, layout):
    """cuDNN's even-n window is PyTorch's mirrored: cudnn(x) == flip(torch(flip(x)))."""
    x = make_input((3, 20, 7, 9), device="cuda", layout=layout)
    err = baselines.cudnn_lrn_error(x)
    if err is not None:
        pytest.skip(err)
    xr = x.detach().clone().requires_grad_()
    y = baselines.cudnn_lrn(xr, size, 1e-2, 0.75, 2.0)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, xr, dy)
    flip = (lambda t: t.flip(1)) if size % 2 == 0 else (lambda t: t)
    y_ref, dx_ref = reference(flip(x), size, 1e-2, 0.75, 2.0, flip(dy))
    assert rel_err(y, flip(y_ref)) <= 1e-5
    assert rel_err(dx, flip(dx_ref)) <= 1e-4
    with pytest.raises(ValueError, match="1 <= size <= 16"):
        baselines.cudnn_lrn(x, 17)
