"""The fused ReLU -> LRN -> max-pool block against the unfused chain relu -> F.local_response_norm ->
F.max_pool2d evaluated in float64 (values and d(input)), and its tie routing against torch's pool.

Runs on CPU in CI (C++ CPU kernels; Triton under TRITON_INTERPRET=1; torch) and on cuda when present."""
import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels.fused as fused
import alexnet_kernels.lrn as lrn
import alexnet_kernels.pool as pool
from alexnet_kernels import _extension
from alexnet_kernels.ops import pool as pool_ops

from common import (DEVICES, after_a_conv_under_autocast, assert_bad_arguments_raise, assert_double_backward_raises,
                    assert_forward_mode_ad_raises,
                    assert_keeps_memory_format, assert_unavailable_backends_say_why, assert_within_twice_torch_error,
                    compile_fullgraph, compiled_and_eager, device_backend_params, gpu,
                    gpu_backend_dtype_layout_shape_cases, make_input, on_gpu_backends, opcheck_both_layouts,
                    rel_err, replayed_forward_and_backward, require, saved_for_backward)

ALEXNET = (5, 1e-4, 0.75, 2.0)   # size, alpha, beta, k
STRONG = (5, 1e-1, 0.75, 1.0)    # a large alpha, so that the normaliser matters at scale-3 inputs

# (shape, (size, alpha, beta, k), (kernel, stride, padding, ceil_mode))
CASES = [
    ((2, 7, 11, 9), STRONG, (3, 2, 0, False)),
    ((2, 6, 12, 10), (4, 2e-2, 0.75, 2.0), (3, 2, 1, True)),       # even LRN window, padding, ceil mode
    ((1, 3, 9, 8), (9, 1e-1, 0.5, 1.0), ((3, 2), (2, 1), 1, False)),  # n > C, rectangular pool
    ((2, 1, 7, 7), (1, 1e-1, 1.5, 1.0), (2, 2, 0, False)),         # C = 1, n = 1
    ((3, 6, 10, 9), STRONG, (3, 2, 0, True)),                       # ceil mode adds a partial window
]


def case_id(case):
    shape, (size, *_), geometry = case
    return "%s-n%d-k%s-s%s-p%s%s" % ("x".join(map(str, shape)), size, *geometry[:3], "-ceil" if geometry[3] else "")


def unfused(x, dz, lrn_args, geometry, dtype=torch.float64, round_lrn_to=None):
    """The chain relu -> LRN -> max-pool in torch ops, in `dtype`; returns (z, dx, pool indices).
    round_lrn_to: round the LRN output (and its gradient) to that dtype, as a chain stored in it would."""
    size, alpha, beta, k = lrn_args
    kernel, stride, padding, ceil_mode = geometry
    xr = x.detach().to(dtype).requires_grad_()
    lrn_out = F.local_response_norm(torch.relu(xr), size, alpha, beta, k)
    if round_lrn_to is not None:
        lrn_out = lrn_out.to(round_lrn_to).to(dtype)
    z, indices = F.max_pool2d(lrn_out, kernel, stride, padding, ceil_mode=ceil_mode, return_indices=True)
    (dx,) = torch.autograd.grad(z, xr, dz.to(dtype))
    return z, dx, indices


def ours(x, dz, lrn_args, geometry, backend):
    xr = x.detach().clone().requires_grad_()
    z = fused.relu_lrn_max_pool2d(xr, *lrn_args, *geometry, backend=backend)
    (dx,) = torch.autograd.grad(z, xr, dz)
    return z, dx


def output_shape(shape, geometry):
    kernel, stride, padding, ceil_mode = geometry
    pair = pool.check_pool_arguments("t", torch.empty(shape), kernel, stride, padding, 1, ceil_mode)
    return tuple(shape[:-2]) + pool_ops.output_hw(shape[-2:], *pair[:3], ceil_mode)


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_fp32_matches_float64_unfused_chain(device, backend, case, layout):
    require(backend, device)
    shape, lrn_args, geometry = case
    x = make_input(shape, device=device, layout=layout)
    dz = make_input(output_shape(shape, geometry), device=device, scale=1.0)
    z, dx = ours(x, dz, lrn_args, geometry, backend)
    z_ref, dx_ref, _ = unfused(x, dz, lrn_args, geometry)
    assert z.shape == z_ref.shape and z.dtype == x.dtype and dx.shape == x.shape
    assert rel_err(z, z_ref) <= 1e-5
    assert rel_err(dx, dx_ref) <= 1e-5


def spanning_lrn_args(lrn_args, channels):
    """LRN arguments with n replaced by 2C - 1 and alpha rescaled to keep alpha / n: the same math whenever
    n >= 2C - 1 (every window then spans all C channels), without torch's composite padding n planes."""
    size, alpha, beta, k = lrn_args
    if size < 2 * channels - 1:
        return lrn_args
    return 2 * channels - 1, alpha * (2 * channels - 1) / size, beta, k


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("case", [
    ((1, 4, 3, 3), (3, 1e-4, 0.75, 1.0), (4, 2, 0, True)),       # the issue's: floor mode 0 rows, ceil mode 1
    ((2, 5, 2, 2), STRONG, (3, 2, 0, True)),                      # googlenet's ceil-mode pool on a 2x2 map
    ((1, 3, 5, 4), (2**31, 0.5, 0.75, 1.0), (3, 2, 1, True)),     # n past int32 (the binding rejected it)
    ((2, 4, 4, 3), (2**63 - 1, 1.0, 0.75, 1.0), (2, 2, 0, False)),
], ids=case_id)
def test_ceil_mode_windows_and_huge_lrn_sizes(device, backend, case):
    require(backend, device)
    shape, lrn_args, geometry = case
    x = make_input(shape, device=device)
    dz = make_input(output_shape(shape, geometry), device=device, scale=1.0)
    z, dx = ours(x, dz, lrn_args, geometry, backend)
    z_ref, dx_ref, _ = unfused(x, dz, spanning_lrn_args(lrn_args, shape[1]), geometry)
    assert z.shape == z_ref.shape
    assert rel_err(z, z_ref) <= 1e-5
    assert rel_err(dx, dx_ref) <= 1e-5


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_routing_equals_torch_pool_on_the_unfused_chain(device, backend, layout):
    """The offsets (where each maximum is) are those of torch's pool on the float64 LRN output: ties of
    zeros (negative windows after the ReLU) go to the first element in scan order."""
    require(backend, device)
    shape, lrn_args, geometry = (3, 8, 13, 11), STRONG, (3, 2, 1, True)
    x = make_input(shape, device=device, layout=layout)
    x[:, :, :5, :5] = -x[:, :, :5, :5].abs()   # whole windows of zeros after the ReLU
    _, offsets = torch.ops.alexnet_kernels.relu_lrn_max_pool2d_forward(x, *lrn_args, [3, 3], [2, 2], [1, 1],
                                                                       True, backend)
    _, _, indices = unfused(x, torch.zeros(output_shape(shape, geometry)), lrn_args, geometry)
    assert torch.equal(pool_ops.indices_from_offsets(offsets, 11, (3, 3), (2, 2), (1, 1)).cpu(), indices.cpu())


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_low_precision_within_twice_torch_error(device, backend, dtype, layout):
    """Flash-attention's rule: at most 2x as far from float64 as torch's own same-dtype chain."""
    require(backend, device, dtype)
    shape, lrn_args, geometry = (4, 13, 11, 9), STRONG, (3, 2, 0, False)
    x = make_input(shape, dtype, device, layout)
    dz = make_input(output_shape(shape, geometry), dtype, device, scale=1.0)
    z, dx = ours(x, dz, lrn_args, geometry, backend)
    z_ref, dx_ref, _ = unfused(x, dz, lrn_args, geometry)
    try:  # torch's own chain in this dtype on this device
        z_t, dx_t, _ = unfused(x, dz, lrn_args, geometry, dtype)
    except NotImplementedError:
        # torch's LRN has no CPU fp16/bf16 kernel: the exact chain with the LRN output stored in `dtype` (its
        # rounding decides which element is the maximum, as in torch's chain) stands in for it.
        z_t, dx_t, _ = unfused(x, dz, lrn_args, geometry, round_lrn_to=dtype)
        z_t, dx_t = z_t.to(dtype), dx_t.to(dtype)
    assert z.dtype == dx.dtype == dtype
    assert_within_twice_torch_error(dtype, (z, z_ref, z_t), (dx, dx_ref, dx_t))


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_nan_and_inf_propagate_like_the_unfused_chain(device, backend):
    require(backend, device)
    shape, lrn_args, geometry = (2, 9, 9, 9), STRONG, (3, 2, 0, False)
    x = make_input(shape, device=device)
    x[0, 2, 1, 1] = float("nan")
    x[1, 6, 4, 2] = float("inf")
    x[1, 0, 2, 3] = -float("inf")   # -inf is zeroed by the ReLU
    dz = make_input(output_shape(shape, geometry), device=device, scale=1.0)
    z, dx = ours(x, dz, lrn_args, geometry, backend)
    z_ref, dx_ref, _ = unfused(x, dz, lrn_args, geometry)
    for got, ref in ((z, z_ref), (dx, dx_ref)):
        assert torch.equal(got.isnan().cpu(), ref.isnan().cpu())
        finite = torch.isfinite(ref)
        assert torch.allclose(got.double()[finite], ref[finite], rtol=1e-5, atol=1e-6)



@pytest.mark.parametrize("device,backend", device_backend_params())
def test_gradient_where_squares_overflow_is_the_unfused_chains(device, backend):
    """x*x = inf in fp32: torch's autograd of the chain gives finite gradients (backend="torch" gave NaN)."""
    require(backend, device)
    x = torch.tensor([1e30, 1.0, 2.0, 3e19, 0.5, 1e19], device=device).view(1, 6, 1, 1)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, = torch.autograd.grad(fused.relu_lrn_max_pool2d(xa, 2, 1.0, 0.75, 1.0, 1, 1, backend=backend).sum(), xa)
    chain = F.max_pool2d(F.local_response_norm(torch.relu(xb), 2, 1.0, 0.75, 1.0), 1, 1)
    ref, = torch.autograd.grad(chain.sum(), xb)
    assert torch.isfinite(ref).all() and torch.allclose(got, ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_signed_zeros_like_the_unfused_chain(device, backend):
    """torch.relu keeps -0 (and LRN and a pool of +-0 windows pass the first zero's sign on): the fused
    block's zeros carry the chain's signs (they came out +0)."""
    require(backend, device)
    g = torch.Generator().manual_seed(3)
    signs = torch.rand((2, 5, 9, 9), generator=g) < 0.5
    x = torch.where(signs, -0.0, 0.0)
    x[0, 1, 2:4] = -1.5  # negatives: relu gives +0
    x = x.to(device)
    z = fused.relu_lrn_max_pool2d(x, *STRONG, 3, 2, 0, False, backend=backend)
    z_ref = F.max_pool2d(F.local_response_norm(torch.relu(x.double().cpu()), *STRONG), 3, 2)
    assert (z.cpu() == 0).all() and torch.equal(torch.signbit(z.cpu()), torch.signbit(z_ref))
    assert torch.signbit(z_ref).any() and not torch.signbit(z_ref).all()


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_empty_batch_and_output_layout(device, backend):
    require(backend, device)
    x = torch.randn(0, 4, 9, 9, device=device, requires_grad=True)
    z = fused.relu_lrn_max_pool2d(x, 5, backend=backend)
    assert z.shape == (0, 4, 4, 4)
    z.sum().backward()
    assert x.grad.shape == x.shape
    for memory_format in (torch.channels_last, torch.contiguous_format):
        x = make_input((2, 6, 9, 8), device=device).contiguous(memory_format=memory_format).requires_grad_()
        assert_keeps_memory_format(lambda t: fused.relu_lrn_max_pool2d(t, *STRONG, backend=backend), x, memory_format)


def test_no_gradient_needed_runs_the_forward_without_autograd(monkeypatch):
    """Under no_grad, inference_mode, or for an input without requires_grad, the functional block calls its
    forward op's function directly (no autograd.Function per call): the same z, no grad_fn; with a gradient
    needed, the autograd op; under torch.compile(fullgraph=True) the forward custom op."""
    require("cpu", "cpu")
    x = make_input((2, 6, 13, 11), scale=3.0)
    args = (*ALEXNET, 3, 2)
    want = fused.relu_lrn_max_pool2d(x.clone().requires_grad_(), *args, backend="cpu")
    assert want.grad_fn is not None
    with monkeypatch.context() as patched:
        def no_autograd_op(*a):
            raise AssertionError("the autograd op ran although no gradient is needed")
        patched.setattr(fused._ops, "relu_lrn_max_pool2d", no_autograd_op)
        for mode in (torch.no_grad, torch.inference_mode, torch.enable_grad):
            with mode():
                got = fused.relu_lrn_max_pool2d(x, *args, backend="cpu")
            assert got.grad_fn is None and torch.equal(got, want.detach())
        with torch.no_grad():
            compiled = compile_fullgraph(lambda t: fused.relu_lrn_max_pool2d(t, *args, backend="cpu"))
            assert torch.equal(compiled(x), want.detach())


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cpu_backward_routes_any_offsets_like_the_torch_backend(case, channels_last):
    """The C++ CPU backward forms dL as a branch-free scatter (pool_cpu.cpp FusedBackward): on offsets that no
    forward wrote -- outside the window (up to 255), naming padded positions -- with NaN and inf in dz, it routes
    exactly what the torch backend's gather routes (nothing for those) in float64."""
    require("cpu", "cpu")
    shape, lrn_args, geometry = case
    kernel, stride, padding, ceil_mode = geometry
    pair = pool.check_pool_arguments("t", torch.empty(shape), kernel, stride, padding, 1, ceil_mode)
    args = (*lrn_args, *(list(v) for v in pair[:3]), ceil_mode)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g, dtype=torch.float64).contiguous(memory_format=memory_format)
    out_shape = output_shape(shape, geometry)
    offsets = torch.randint(0, 256, out_shape, generator=g, dtype=torch.uint8)
    window = pair[0][0] * pair[0][1]
    in_window = torch.randint(0, window, out_shape, generator=g, dtype=torch.uint8)
    offsets = torch.where(torch.rand(out_shape, generator=g) < 0.7, in_window, offsets)
    dz = torch.randn(out_shape, generator=g, dtype=torch.float64)
    dz[offsets >= window] = float("nan")
    dz.view(-1)[::7] = float("inf") * torch.sign(dz.view(-1)[::7])
    dz[offsets >= window] = float("nan")   # routed nowhere: must not show
    offsets, dz = (t.contiguous(memory_format=memory_format) for t in (offsets, dz))
    got = torch.ops.alexnet_kernels.relu_lrn_max_pool2d_backward(dz, x, offsets, *args, "cpu")
    want = torch.ops.alexnet_kernels.relu_lrn_max_pool2d_backward(dz, x, offsets, *args, "torch")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert torch.equal(got.isnan(), want.isnan())


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_kernels_write_every_output(device, backend):
    """Poison the outputs, launch the kernels directly, and check every element was written."""
    require(backend, device)
    if backend == "torch":
        pytest.skip("the torch composite allocates its own outputs")
    shape, lrn_args, geometry = (3, 7, 13, 12), STRONG, (3, 2, 1, True)
    k, s, p = (3, 3), (2, 2), (1, 1)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = make_input(shape, device=device).contiguous(memory_format=memory_format)
        z_ref, dx_ref, indices = unfused(x, torch.ones(output_shape(shape, geometry)), lrn_args, geometry)
        z = torch.full(z_ref.shape, float("nan"), device=device).contiguous(memory_format=memory_format)
        offsets = torch.full(z.shape, 255, dtype=torch.uint8, device=device).contiguous(memory_format=memory_format)
        dz = torch.ones_like(z)
        dx = torch.full_like(x, float("nan"))
        if backend == "triton":
            tk = pool_ops.triton_pool()
            tk.relu_lrn_max_pool2d_forward(x, z, offsets, *lrn_args, k, s, p)
            tk.relu_lrn_max_pool2d_backward(x, dz, offsets, dx, *lrn_args, k, s, p)
        else:
            cl = memory_format == torch.channels_last
            _extension.load().relu_lrn_max_pool2d_forward(x, z, offsets, *lrn_args, *k, *s, *p, cl)
            _extension.load().relu_lrn_max_pool2d_backward(x, dz, offsets, dx, *lrn_args, *k, *s, *p, cl)
        assert torch.equal(pool_ops.indices_from_offsets(offsets, 12, k, s, p).cpu(), indices.cpu())
        assert rel_err(z, z_ref) <= 1e-5 and rel_err(dx, dx_ref) <= 1e-5
        assert not dx.isnan().any()


def test_gradcheck_float64_cpu_kernel():
    require("cpu", "cpu", torch.float64)
    # Distinct positive and negative values away from 0 (the ReLU's kink) and no near-ties in the pool.
    x = torch.randperm(2 * 6 * 9 * 8, dtype=torch.float64).reshape(2, 6, 9, 8) / 50 - 4.3
    x.requires_grad_()
    for lrn_args, geometry in [(STRONG, (3, 2, 0, False)), ((4, 3e-1, 0.75, 1.0), (3, 2, 1, True))]:
        f = lambda t: fused.relu_lrn_max_pool2d(t, *lrn_args, *geometry, backend="cpu")  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)


def test_backward_saves_the_input_and_one_byte_per_output():
    x = make_input((2, 8, 13, 13)).requires_grad_()
    z, saved = saved_for_backward(lambda: fused.relu_lrn_max_pool2d(x, *ALEXNET, backend="auto"))
    assert len(saved) == 2 and saved[0] is x
    assert saved[1].dtype == torch.uint8 and saved[1].shape == z.shape
    z.sum().backward()


def test_double_backward_raises_instead_of_answering_zero():
    forwards = (lambda t: fused.relu_lrn_max_pool2d(t, *STRONG, backend="auto"),
                lambda t: torch.ops.alexnet_kernels.relu_lrn_max_pool2d_forward(
                    t, *STRONG, [3, 3], [2, 2], [0, 0], False, "auto")[0])
    assert_double_backward_raises(forwards, make_input((2, 5, 7, 7)).requires_grad_(), (2, 5, 3, 3))


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_opcheck(device, backend):
    require(backend, device)
    x = make_input((2, 6, 9, 8), device=device).requires_grad_()
    args = (*STRONG, [3, 3], [2, 2], [1, 1], True, backend)
    opcheck_both_layouts(torch.ops.alexnet_kernels.relu_lrn_max_pool2d_forward.default, x, args)
    z, offsets = torch.ops.alexnet_kernels.relu_lrn_max_pool2d_forward(x.detach(), *args)
    torch.library.opcheck(torch.ops.alexnet_kernels.relu_lrn_max_pool2d_backward.default,
                          (torch.randn_like(z), x.detach(), offsets) + args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    backend = "cpu" if device == "cpu" else "auto"
    require(backend, device)

    def block(t):
        return fused.relu_lrn_max_pool2d(t * 2, *STRONG, backend=backend) + 1

    x = make_input((2, 8, 11, 11), device=device).requires_grad_()
    y, y_eager, g, g_eager = compiled_and_eager(compile_fullgraph(block), block, x)
    assert torch.equal(y, y_eager)
    assert torch.allclose(g, g_eager, rtol=1e-6, atol=1e-7)



def test_torch_compile_dynamic_fullgraph_module():
    """dynamic=True turns the module's alpha/beta/k into SymFloats; the shared LRN argument check traced
    none of them (math.isfinite: fullgraph=True raised).  New shapes rerun without errors."""
    require("cpu", "cpu")
    m = fused.ReLULRNMaxPool2d(*STRONG, backend="cpu")
    compiled = compile_fullgraph(m, dynamic=True)
    for shape in ((2, 8, 11, 11), (1, 5, 9, 13)):
        z, z_eager, g, g_eager = compiled_and_eager(compiled, m, make_input(shape).requires_grad_())
        assert torch.equal(z, z_eager)
        assert torch.equal(g, g_eager)

def test_module_equals_the_three_torch_modules():
    torch_block = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.LocalResponseNorm(*ALEXNET),
                                      torch.nn.MaxPool2d(3, 2))
    block = fused.ReLULRNMaxPool2d(*ALEXNET, 3, 2)
    assert dict(block.state_dict()) == dict(torch_block.state_dict()) == {}
    assert "size=5" in repr(block) and "kernel_size=3" in repr(block)
    x = make_input((2, 16, 13, 13), scale=30.0)
    assert rel_err(block(x), torch_block(x.double())) <= 1e-5
    ours_separate = torch.nn.Sequential(torch.nn.ReLU(), lrn.LocalResponseNorm(*ALEXNET), pool.MaxPool2d(3, 2))
    assert rel_err(block(x), ours_separate(x)) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=["fp32", "fp64", "fp16", "bf16"])
@pytest.mark.parametrize("shape,geometry", [
    ((1, 24, 27, 27), (3, 2, 0, False)),   # AlexNet's maps (whole planes), one image split over the threads
    ((3, 10, 13, 13), (3, 2, 0, False)),   # images not a multiple of the threads
    ((2, 7, 12, 10), (3, 2, 1, True)),     # padding: planes in phase layout
    ((1, 9, 11, 11), (3, 2, 0, False)),
], ids=["1x24x27x27", "3x10x13x13", "2x7x12x10-p1-ceil", "1x9x11x11"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_cpu_forward_is_our_separate_ops_bit_for_bit(dtype, shape, geometry, threads):
    """The C++ CPU forward's values and routing are relu -> our LRN -> our max-pool's (all on the CPU kernels)
    bit for bit, whatever the thread count splits the channels into."""
    require("cpu", "cpu")
    kernel, stride, padding, ceil_mode = geometry
    pool_args = ([kernel] * 2, [stride] * 2, [padding] * 2, ceil_mode)
    x = make_input(shape, scale=30.0).to(dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        z, offsets = torch.ops.alexnet_kernels.relu_lrn_max_pool2d_forward(x, *ALEXNET, *pool_args, "cpu")
        l = lrn.local_response_norm(torch.relu(x), *ALEXNET, backend="cpu")
        y, y_offsets = torch.ops.alexnet_kernels.max_pool2d_forward(l, *pool_args, "cpu")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(z, y) and torch.equal(offsets, y_offsets)


def test_large_pool_windows_run_unfused():
    x = make_input((1, 4, 20, 20))
    z = fused.relu_lrn_max_pool2d(x, *STRONG, kernel_size=17, stride=1)   # 289 > 256 window elements
    z_ref, _, _ = unfused(x, torch.zeros(1, 4, 4, 4), STRONG, (17, 1, 0, False))
    assert rel_err(z, z_ref) <= 1e-5


@pytest.mark.parametrize("args,exc,match", [
    (dict(input=torch.randn(1, 4, 2, 2)), ValueError, "larger than the padded input"),
    (dict(padding=2), ValueError, "at most half"),
    (dict(input=torch.randn(4, 5)), ValueError, "3-D .* or 4-D"),
    (dict(input=torch.randn(3, 8, 8)), ValueError, "expected a 4-D .*unsqueeze"),
    (dict(input=torch.randint(0, 5, (2, 3, 8, 8))), TypeError, "floating-point"),
    (dict(size=0), ValueError, "size must be >= 1"),
    (dict(k=0.0), ValueError, "k must be > 0"),
    (dict(alpha=-1.0), ValueError, "alpha must be >= 0"),
    (dict(kernel_size=0), ValueError, "kernel_size must be >= 1"),
    (dict(backend="cudnn"), ValueError, "backend must be one of"),
])
def test_bad_inputs_raise_clear_errors(args, exc, match):
    good = dict(input=make_input((2, 3, 8, 8)), size=5, alpha=1e-4, beta=0.75, k=2.0)
    assert_bad_arguments_raise(fused.relu_lrn_max_pool2d, good, args, exc, match)


def test_backend_that_cannot_take_the_input_says_why():
    assert_unavailable_backends_say_why(lambda t, backend: fused.relu_lrn_max_pool2d(t, 5, backend=backend),
                                        make_input((2, 3, 8, 8)))


# ----------------------------------------------------------------------------------------------------
# GPU only


@gpu_backend_dtype_layout_shape_cases([(128, 96, 55, 55), (32, 256, 27, 27), (3, 33, 9, 7)])
def test_gpu_alexnet_shapes(backend, dtype, layout, shape):
    require(backend, "cuda", dtype)
    geometry = (3, 2, 0, False)
    x = make_input(shape, dtype, "cuda", layout, scale=30.0)   # conv-output-like magnitudes
    dz = make_input(output_shape(shape, geometry), dtype, "cuda", scale=1.0)
    z, dx = ours(x, dz, ALEXNET, geometry, backend)
    z_ref, dx_ref, _ = unfused(x, dz, ALEXNET, geometry)
    if dtype == torch.float32:
        assert rel_err(z, z_ref) <= 1e-5 and rel_err(dx, dx_ref) <= 1e-5
    else:
        z_t, dx_t, _ = unfused(x, dz, ALEXNET, geometry, dtype)
        assert_within_twice_torch_error(dtype, (z, z_ref, z_t), (dx, dx_ref, dx_t))


@on_gpu_backends
def test_gpu_cuda_graph_capture(backend):
    require(backend, "cuda")
    x = make_input((4, 16, 13, 13), device="cuda").requires_grad_()
    dz = torch.randn(4, 16, 6, 6, device="cuda")
    z, dx = replayed_forward_and_backward(lambda t: fused.relu_lrn_max_pool2d(t, *STRONG, backend=backend), x, dz,
                                          lambda: make_input((4, 16, 13, 13), device="cuda"))
    z_ref, dx_ref, _ = unfused(x, dz, STRONG, (3, 2, 0, False))
    assert rel_err(z, z_ref) <= 1e-5 and rel_err(dx, dx_ref) <= 1e-5


@gpu
@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_gpu_autocast(amp_dtype):
    conv, _, z = after_a_conv_under_autocast(fused.ReLULRNMaxPool2d(*ALEXNET), amp_dtype)
    z.float().sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_forward_mode_ad_raises_instead_of_dropping_the_tangent():
    """With no gradient needed the functional skips autograd -- but not for an input carrying a forward-mode
    tangent: that takes the autograd op, which says it has no jvp."""
    assert_forward_mode_ad_raises(lambda t: fused.relu_lrn_max_pool2d(t, 5), torch.randn(1, 3, 9, 9))
