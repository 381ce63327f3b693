"""Philox dropout and bias + ReLU + dropout: the mask's definition (Random123 known answers), the same mask on
every backend, statistics (keep rate, independence), scaling, gradients from the regenerated mask, nothing
mask-sized saved, torch's seeding, edge cases, custom-op checks.

Runs on CPU in CI (C++ CPU kernels; Triton under TRITON_INTERPRET=1; the torch reference) and on cuda."""
import math

import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels.dropout as dr
from alexnet_kernels.ops import dropout as dropout_ops

from common import DEVICES, capture_and_replay, device_backend_params, gpu, make_input, require


def seed_tensor(value, device="cpu"):
    return torch.tensor([value], dtype=torch.int64, device=device)


def reference_dropout(x, seed, p):
    """x * (keep ? 1/(1-p) : 0) with the mask of the memory-order index (x contiguous here), in fp32/fp64."""
    keep = dropout_ops.keep_mask_torch(x.numel(), seed, p, x.device).view(x.shape)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (x.to(acc) * (keep.to(acc) * (1.0 / (1.0 - p)))).to(x.dtype), keep


def test_philox_known_answers():
    """Random123's published known-answer vectors for Philox-4x32-10."""
    vectors = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
               ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
               ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
                (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, expected in vectors:
        out = dropout_ops.philox4x32_10_torch(*(torch.tensor([c], dtype=torch.int64) for c in counter), *key)
        assert tuple(int(o) for o in out) == expected


def _python_key(seed):
    s = seed & 0xFFFFFFFFFFFFFFFF
    return s & 0xFFFFFFFF, s >> 32


@pytest.mark.parametrize("seed", [0, 1, 2**32 - 1, 2**32, 2**62 + 12345, 2**63 - 1, -1, -2**63, -2**40 + 7])
def test_seed_is_split_on_its_device(seed):
    k0, k1 = dropout_ops.seed_key_torch(torch.tensor([seed], dtype=torch.int64))
    assert (k0.item(), k1.item()) == _python_key(seed)


def test_torch_backend_never_reads_a_tensor_on_the_host(monkeypatch):
    """The seed is split on its device: no .item() (a stall per call, and illegal in a CUDA-graph capture)."""
    x = make_input((7, 12), seed=4)
    bias = make_input((12,), seed=5)
    seed = torch.tensor([-2**40 + 7], dtype=torch.int64)
    expected = dropout_ops.philox4x32_10_torch(  # the mask from python-int keys, computed before the patch
        torch.arange(21, dtype=torch.int64), torch.zeros(21, dtype=torch.int64), torch.zeros(21, dtype=torch.int64),
        torch.zeros(21, dtype=torch.int64), *_python_key(-2**40 + 7))
    expected_keep = (torch.stack(expected, 1).reshape(-1) >> 8) >= dropout_ops.threshold_and_scale(0.5)[0]

    def host_read(*args):
        raise AssertionError("a tensor was read on the host")

    for name in ("item", "tolist", "__int__", "__index__", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    y = torch.ops.alexnet_kernels.dropout_forward(x, seed, 0.5, "torch")
    h = torch.ops.alexnet_kernels.bias_relu_dropout_forward(x, bias, seed, 0.5, "torch")
    dx, db = torch.ops.alexnet_kernels.bias_relu_dropout_backward(torch.ones_like(h), h, seed, 0.5, "torch")
    monkeypatch.undo()
    keep = expected_keep.view(7, 12)
    assert torch.equal(y, torch.where(keep, x * 2, torch.zeros_like(x)))
    assert torch.equal(h, torch.where(keep, torch.relu(x + bias) * 2, torch.zeros_like(x)))
    assert torch.equal(dx != 0, keep & (torch.relu(x + bias) > 0))


@gpu
def test_torch_backend_does_not_synchronise():
    x = torch.randn(64, 33, device="cuda")
    seed = torch.randint(0, 2**62, (1,), dtype=torch.int64, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = torch.ops.alexnet_kernels.dropout_forward(x, seed, 0.5, "torch")
        torch.ops.alexnet_kernels.bias_relu_dropout_forward(x, x[0], seed, 0.5, "torch")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(y, torch.ops.alexnet_kernels.dropout_forward(x, seed, 0.5, "triton"))


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_threshold_one(device, backend):
    """p = 2**-24: threshold == 1, the value Triton's JIT specialises to a constant (tests/triton_aot.py
    compiles that case for the GPU); every backend drops exactly the elements whose 24-bit draw is 0."""
    require(backend, device)
    p = 2.0 ** -24
    assert dropout_ops.threshold_and_scale(p)[0] == 1
    x = make_input((5, 301), device=device)
    s = seed_tensor(77, device)
    assert torch.equal(torch.ops.alexnet_kernels.dropout_forward(x, s, p, backend), reference_dropout(x, s, p)[0])
    b = make_input((301,), device=device)
    y = torch.ops.alexnet_kernels.bias_relu_dropout_forward(x, b, s, p, backend)
    keep = dropout_ops.keep_mask_torch(x.numel(), s, p, x.device).view(x.shape)
    assert torch.equal(y, torch.where(keep, torch.relu(x + b) * (1.0 / (1.0 - p)), torch.zeros_like(x)))


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 123456789, -2**40 + 17], ids=["s0", "s1", "sneg"])
def test_mask_is_the_same_on_every_backend(device, backend, p, seed):
    """Exactly the reference values (mask and scaling), for odd sizes (a partial last group of 4)."""
    require(backend, device)
    x = make_input((3, 7, 13), device=device)
    s = seed_tensor(seed, device)
    y = torch.ops.alexnet_kernels.dropout_forward(x, s, p, backend)
    y_ref, keep = reference_dropout(x, s, p)
    assert torch.equal(y, y_ref)
    dy = make_input((3, 7, 13), device=device)
    dx = torch.ops.alexnet_kernels.dropout_backward(dy, s, p, [0, 1, 2], backend)
    assert torch.equal(dx, reference_dropout(dy, s, p)[0])  # the backward regenerates the forward's mask


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=["fp16", "bf16", "fp64"])
def test_other_dtypes(device, backend, dtype):
    require(backend, device, dtype, torch_cpu_low_precision=True)
    if dtype == torch.float64 and backend not in ("cpu", "torch"):
        pytest.skip("float64 runs on the C++ CPU kernels and the torch reference only")
    x = make_input((5, 37), dtype, device)
    s = seed_tensor(99, device)
    y = torch.ops.alexnet_kernels.dropout_forward(x, s, 0.3, backend)
    assert y.dtype == dtype and torch.equal(y, reference_dropout(x, s, 0.3)[0])


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_keep_rate_and_independence(device, backend):
    """Keep rate within binomial bounds; successive calls, neighbouring elements (within and across groups of
    four) and the two halves of the seed are uncorrelated."""
    require(backend, device)
    n = 1 << 16
    x = torch.ones(n, device=device)
    for p in (0.2, 0.5, 0.8):
        y1 = dr.dropout(x, p, backend=backend)
        y2 = dr.dropout(x, p, backend=backend)
        k1, k2 = (y1 != 0).double().cpu(), (y2 != 0).double().cpu()
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(k1.mean().item() - (1 - p)) < 6 * sigma
        assert torch.allclose(y1[y1 != 0], torch.tensor(1.0 / (1.0 - p), device=device))
        for a, b in ((k1, k2), (k1[:-1], k1[1:]), (k1[:-4], k1[4:]), (k1[:-1024], k1[1024:])):
            corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
            assert abs(corr) < 6 / math.sqrt(a.numel()), corr


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_seeding_follows_torch(device, backend):
    require(backend, device)
    x = make_input((64, 33), device=device)
    torch.manual_seed(7)
    a = dr.dropout(x, 0.5, backend=backend)
    torch.manual_seed(7)
    b = dr.dropout(x, 0.5, backend=backend)
    c = dr.dropout(x, 0.5, backend=backend)
    assert torch.equal(a, b) and not torch.equal(b, c)
    g1, g2 = torch.Generator(device).manual_seed(3), torch.Generator(device).manual_seed(3)
    assert torch.equal(dr.dropout(x, 0.5, generator=g1, backend=backend),
                       dr.dropout(x, 0.5, generator=g2, backend=backend))


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_layouts_and_gradient(device, backend, layout):
    """channels_last keeps its layout (mask keyed by memory order); a strided view works; dx uses y's mask."""
    require(backend, device)
    x = make_input((2, 5, 4, 3), device=device, layout=layout).requires_grad_()
    y = dr.dropout(x, 0.4, backend=backend)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    dy = make_input((2, 5, 4, 3), device=device)
    (dx,) = torch.autograd.grad(y, x, dy)
    kept = y != 0
    assert torch.equal(y[kept], (x.detach() * (1 / 0.6))[kept])
    assert torch.equal(dx, torch.where(kept, dy * (1 / 0.6), torch.zeros_like(dy)))


@pytest.mark.parametrize("device,backend", device_backend_params())
def test_edge_cases(device, backend):
    require(backend, device)
    x = make_input((4, 9), device=device)
    assert dr.dropout(x, 0.0, backend=backend) is x
    assert dr.dropout(x, 0.7, training=False, backend=backend) is x
    x[0, 0] = float("nan")
    y = dr.dropout(x, 1.0, backend=backend)
    assert torch.equal(y.isnan(), x.isnan()) and (y.nan_to_num(0) == 0).all()   # x * 0, as torch
    empty = torch.randn(0, 5, device=device, requires_grad=True)
    dr.dropout(empty, 0.5, backend=backend).sum().backward()
    assert empty.grad.shape == empty.shape


@pytest.mark.parametrize("bad,exc,match", [
    (dict(p=1.5), ValueError, "between 0 and 1"),
    (dict(p=-0.1), ValueError, "between 0 and 1"),
    (dict(p=float("nan")), ValueError, "between 0 and 1"),
    (dict(p="0.5"), TypeError, "p must be a real number"),
    (dict(input=torch.arange(6)), TypeError, "floating-point"),
    (dict(inplace=True), ValueError, "inplace=True is not supported"),
    (dict(backend="cudnn"), ValueError, "backend must be one of"),
    (dict(generator=5), TypeError, "generator must be a torch.Generator"),
    (dict(generator=5, training=False), TypeError, "generator must be a torch.Generator"),
    (dict(training="yes"), TypeError, "training must be a bool"),
    (dict(training=1), TypeError, "training must be a bool"),
    (dict(training=None, p=0.0), TypeError, "training must be a bool"),
])
def test_bad_inputs(bad, exc, match):
    kwargs = dict(input=make_input((4, 6)), p=0.5)
    kwargs.update(bad)
    with pytest.raises(exc, match=match):
        dr.dropout(**kwargs)



def test_inplace_is_accepted_where_dropout_is_the_identity():
    """An eval-mode nn.Dropout(inplace=True) (or p = 0) returns its input in torch: so does ours (it raised)."""
    x = make_input((4, 6))
    assert dr.dropout(x, 0.5, training=False, inplace=True) is x
    assert dr.dropout(x, 0.0, training=True, inplace=True) is x
    m, t = dr.Dropout(0.5, inplace=True).eval(), torch.nn.Dropout(0.5, inplace=True).eval()
    assert m(x) is x and t(x) is x
    with pytest.raises(ValueError, match="inplace=True is not supported"):
        m.train()(x)

@pytest.mark.parametrize("training", ["yes", 1, None, 1.0])
def test_training_must_be_a_bool_as_in_torch(training):
    x = make_input((4, 6))
    with pytest.raises(TypeError):
        F.dropout(x, 0.5, training)
    with pytest.raises(TypeError, match="training must be a bool"):
        dr.dropout(x, 0.5, training)
    with pytest.raises(TypeError, match="training must be a bool"):
        dr.bias_relu_dropout(x, make_input((6,)), 0.5, training)


def test_nothing_mask_sized_is_saved():
    x = make_input((64, 128)).requires_grad_()
    b = make_input((128,)).requires_grad_()
    for fn, expected in ((lambda: dr.dropout(x, 0.5), lambda y: 8),
                         (lambda: dr.bias_relu_dropout(x, b, 0.5), lambda y: y.numel() * y.element_size() + 8)):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = fn()
        assert not any(t.dtype == torch.bool for t in saved)
        assert sum(t.numel() * t.element_size() for t in saved) == expected(y)
        y.sum().backward()


def test_module_is_a_drop_in_for_torch():
    ref, m = torch.nn.Dropout(0.3), dr.Dropout(0.3)
    assert isinstance(m, torch.nn.Dropout) and m.state_dict().keys() == ref.state_dict().keys()
    assert repr(m) == "alexnet_kernels." + repr(ref)  # torch's arguments, under the package's name
    x = make_input((8, 16))
    assert m.eval()(x) is x
    y = m.train()(x)
    assert ((y == 0) | torch.isclose(y, x / 0.7)).all()


# ----------------------------------------------------------------------------------------------------
# bias + ReLU + dropout

def bias_relu_reference(x, b, seed, p, dy):
    """relu(x + b) * mask * scale with the reference mask, and its autograd gradients (float64)."""
    keep = dropout_ops.keep_mask_torch(x.numel(), seed, p, x.device).view(x.shape)
    xr, br = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    y = torch.relu(xr + br) * (keep.double() * (1.0 / (1.0 - p)))
    dx, db = torch.autograd.grad(y, (xr, br), dy.double())
    return y, dx, db


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("shape", [(33, 24), (17, 30), (2, 5, 12)], ids=["N%4=0", "N%4!=0", "3-D"])
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_bias_relu_dropout_values_and_gradients(device, backend, shape, p):
    require(backend, device)
    x = make_input(shape, device=device).requires_grad_()
    b = make_input(shape[-1:], device=device).requires_grad_()
    dy = make_input(shape, device=device)
    torch.manual_seed(5)
    y = dr.bias_relu_dropout(x, b, p, backend=backend)
    dx, db = torch.autograd.grad(y, (x, b), dy)
    torch.manual_seed(5)
    seed = dr.draw_seed(device) if p > 0 else seed_tensor(0, device)
    y_ref, dx_ref, db_ref = bias_relu_reference(x.reshape(-1, shape[-1]), b, seed, p, dy.reshape(-1, shape[-1]))
    torch.testing.assert_close(y, y_ref.view(shape).float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dx, dx_ref.view(shape).float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(db, db_ref.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_bias_relu_dropout_keeps_negative_zero(device, backend, p):
    """torch's chain on x + b = -0: relu keeps -0, and dropout's multiply keeps the sign (kept or dropped)."""
    require(backend, device)
    x = torch.full((8, 12), -0.0, device=device)
    b = torch.full((12,), -0.0, device=device)
    y = dr.bias_relu_dropout(x, b, p, backend=backend)
    y_ref = F.dropout(torch.relu(x + b), p)
    assert torch.signbit(y_ref).all()
    assert (y == 0).all() and torch.signbit(y).all()


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_bias_relu_dropout_low_precision(device, backend, dtype):
    """fp16/bf16: computed in fp32, rounded once; d(bias) summed in fp32."""
    require(backend, device, dtype, torch_cpu_low_precision=True)
    x, b, dy = make_input((40, 64), dtype, device), make_input((64,), dtype, device), make_input((40, 64), dtype, device)
    s = seed_tensor(11, device)
    y = torch.ops.alexnet_kernels.bias_relu_dropout_forward(x, b, s, 0.5, backend)
    dx, db = torch.ops.alexnet_kernels.bias_relu_dropout_backward(dy, y, s, 0.5, backend)
    y_ref, dx_ref, db_ref = bias_relu_reference(x, b, s, 0.5, dy)
    assert torch.equal(y, y_ref.float().to(dtype)) or torch.allclose(y.double(), y_ref, rtol=torch.finfo(dtype).eps)
    assert torch.equal(dx, dx_ref.to(dtype))
    torch.testing.assert_close(db.double(), db_ref, rtol=2 * torch.finfo(dtype).eps, atol=1e-3)


@pytest.mark.parametrize("device,backend", device_backend_params())
@pytest.mark.parametrize("shape", [(3, 0), (0, 0), (2, 3, 0), (0, 4), (0,)], ids=lambda s: "x".join(map(str, s)))
def test_bias_relu_dropout_empty_inputs_like_torch(device, backend, shape):
    """torch's dropout(relu(x + b)) of an empty x is an empty tensor of x's shape, the last dim 0 included
    (reshape(-1, 0) used to fail); the gradients are empty too."""
    require(backend, device)
    x = torch.randn(shape, device=device, requires_grad=True)
    b = torch.randn(shape[-1:], device=device, requires_grad=True)
    y = dr.bias_relu_dropout(x, b, 0.5, backend=backend)
    y_t = F.dropout(F.relu(x + b), 0.5)
    assert y.shape == y_t.shape == x.shape and y.dtype == y_t.dtype
    dx, db = torch.autograd.grad(y, (x, b), torch.ones_like(y))
    assert dx.shape == x.shape and db.shape == b.shape and not db.any()


@pytest.mark.parametrize("shape", [(300, 70), (300, 72)], ids=["N%4!=0", "N%4=0"])
def test_triton_backward_programs_walk_several_row_tiles(monkeypatch, shape):
    """The Triton backward's programs walk several row tiles each (a lower program cap forces it here) and
    leave one d(bias) scratch row per program: dx exactly the reference's, d(bias) within fp32's error of
    float64's and the same bits on every run."""
    require("triton", "cpu")
    from alexnet_kernels.triton_kernels import dropout as td
    monkeypatch.setattr(td, "BACKWARD_MAX_PROGRAMS", 6)
    grid, block_m, _, steps = td.backward_plan(*shape)
    assert steps > 1 and grid[0] > 1 and grid[0] * block_m * steps > shape[0]  # a partly masked last program
    launches = []
    real_launch = td.launch
    monkeypatch.setattr(td, "launch", lambda kernel, g, *a, **k: (
        kernel is td.bias_relu_dropout_backward_kernel and launches.append((g, a[3].shape, k)),
        real_launch(kernel, g, *a, **k)))
    x, b, dy = make_input(shape), make_input(shape[-1:]), make_input(shape)
    s = seed_tensor(7)
    y = torch.ops.alexnet_kernels.bias_relu_dropout_forward(x, b, s, 0.5, "triton")
    dx, db = torch.ops.alexnet_kernels.bias_relu_dropout_backward(dy, y, s, 0.5, "triton")
    dx2, db2 = torch.ops.alexnet_kernels.bias_relu_dropout_backward(dy, y, s, 0.5, "triton")
    assert [(g, tuple(scratch), k["ROW_STEPS"]) for g, scratch, k in launches] == \
        [(grid, (grid[0], shape[1]), steps)] * 2
    _, dx_ref, db_ref = bias_relu_reference(x, b, s, 0.5, dy)
    assert torch.equal(dx, dx_ref.float())
    torch.testing.assert_close(db.double(), db_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(dx, dx2) and torch.equal(db, db2)


def _backward_bytes(M, N, element_size):
    """(bytes the Triton backward moves, the minimum): dy and y read, dx written, d(bias) written, plus the
    scratch rows written and read, their fp32 sum written, and its rounding to the dtype (read and write)."""
    from alexnet_kernels.triton_kernels import dropout as td
    grid, _, _, _ = td.backward_plan(M, N)
    minimum = 3 * M * N * element_size + N * element_size
    second_level = 2 * grid[0] * N * 4 + N * 4 + (N * 4 + N * element_size if element_size != 4 else 0)
    return minimum - N * element_size + second_level, minimum


@pytest.mark.parametrize("shape", [(128, 4096), (128, 9216), (8192, 4096), (128, 2048)],
                         ids=lambda s: "x".join(map(str, s)))   # AlexNet's fc layers, one tower, a large batch
@pytest.mark.parametrize("element_size", [2, 4], ids=["16-bit", "fp32"])
def test_triton_backward_traffic_within_a_tenth_of_the_minimum(shape, element_size):
    """The d(bias) scratch is one fp32 row per program row of at least BACKWARD_MIN_ROWS rows (it was one per
    4 rows at N >= 256, +33 % traffic in bf16)."""
    moved, minimum = _backward_bytes(*shape, element_size)
    assert minimum < moved <= 1.1 * minimum, (moved, minimum)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_bias_relu_dropout_gradcheck_float64(backend):
    require(backend, "cpu", torch.float64)
    x = (torch.rand(6, 8, dtype=torch.float64) + 0.1) * torch.tensor([1.0, -1.0]).repeat(4)  # away from the kink
    x.requires_grad_()
    b = torch.zeros(8, dtype=torch.float64, requires_grad=True)

    def f(x, b):  # a fixed generator: every call draws the same seed
        return dr.bias_relu_dropout(x, b, 0.4, generator=torch.Generator().manual_seed(0), backend=backend)

    assert torch.autograd.gradcheck(f, (x, b), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad,exc,match", [
    (dict(bias=torch.randn(5)), ValueError, "bias must be 1-D with input.shape"),
    (dict(bias=torch.randn(6, 1)), ValueError, "bias must be 1-D"),
    (dict(bias=torch.randn(6, dtype=torch.float64)), ValueError, "input's dtype"),
    (dict(input=torch.arange(24).view(4, 6)), TypeError, "floating-point"),
    (dict(p=2.0), ValueError, "between 0 and 1"),
    (dict(generator=5), TypeError, "generator must be a torch.Generator"),
    (dict(training="yes"), TypeError, "training must be a bool"),
])
def test_bias_relu_dropout_bad_inputs(bad, exc, match):
    kwargs = dict(input=make_input((4, 6)), bias=make_input((6,)), p=0.5)
    kwargs.update(bad)
    with pytest.raises(exc, match=match):
        dr.bias_relu_dropout(**kwargs)


# ----------------------------------------------------------------------------------------------------
# Custom-op checks

@pytest.mark.parametrize("device,backend", device_backend_params())
def test_opcheck(device, backend):
    require(backend, device)
    s = seed_tensor(5, device)
    x = make_input((6, 8), device=device).requires_grad_()
    b = make_input((8,), device=device).requires_grad_()
    torch.library.opcheck(torch.ops.alexnet_kernels.dropout_forward.default, (x, s, 0.5, backend))
    torch.library.opcheck(torch.ops.alexnet_kernels.dropout_backward.default,
                          (x.detach(), s, 0.5, [0, 1], backend))
    torch.library.opcheck(torch.ops.alexnet_kernels.bias_relu_dropout_forward.default, (x, b, s, 0.5, backend))
    y = torch.ops.alexnet_kernels.bias_relu_dropout_forward(x.detach(), b.detach(), s, 0.5, backend)
    torch.library.opcheck(torch.ops.alexnet_kernels.bias_relu_dropout_backward.default,
                          (torch.randn_like(y), y, s, 0.5, backend))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    backend = "cpu" if device == "cpu" else "auto"
    require(backend, device)
    torch._dynamo.reset()
    b = make_input((16,), device=device).requires_grad_()

    def block(t):
        return dr.dropout(dr.bias_relu_dropout(t * 2, b, 0.5, backend=backend), 0.3, backend=backend) + 1

    compiled = torch.compile(block, fullgraph=True)
    x = make_input((8, 16), device=device).requires_grad_()
    y = compiled(x)
    (gx, gb) = torch.autograd.grad(y.sum(), (x, b))
    # Masks come from torch's generator inside the graph: check structure, not values.
    h = torch.relu(x.detach() * 2 + b.detach())
    kept = y.detach() != 1
    assert torch.allclose((y.detach() - 1)[kept], (h / 0.5 / 0.7)[kept], rtol=1e-5)
    assert torch.equal(gx != 0, kept & (h > 0))


def test_export_with_a_dynamic_batch_dim():
    """bias_relu_dropout's (M, N) view kept the leading dims symbolic: torch.Size.numel() had fixed the batch
    to its traced value, so torch.export with a dynamic batch dim raised (and compile specialised it)."""
    require("cpu", "cpu")
    fc = dr.LinearReLUDropout(7, 5, p=0.5, backend="cpu")
    for mode, shape in (("eval", (3, 7)), ("train", (2, 4, 7))):
        getattr(fc, mode)()
        x = make_input(shape)
        exported = torch.export.export(fc, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        for batch in (1, 6):
            xb = make_input((batch,) + shape[1:])
            torch.manual_seed(1)
            got = exported.module()(xb)
            torch.manual_seed(1)
            assert torch.equal(got, fc(xb))


# ----------------------------------------------------------------------------------------------------
# GPU only

@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("shape", [(128, 4096), (128, 9216), (8192, 4096)], ids=lambda s: "x".join(map(str, s)))
def test_gpu_alexnet_shapes_match_the_reference(backend, shape):
    require(backend, "cuda")
    x, b = make_input(shape, device="cuda"), make_input(shape[-1:], device="cuda")
    s = seed_tensor(2**33 + 5, "cuda")
    y = torch.ops.alexnet_kernels.dropout_forward(x, s, 0.5, backend)
    assert torch.equal(y, reference_dropout(x, s, 0.5)[0])
    y = torch.ops.alexnet_kernels.bias_relu_dropout_forward(x, b, s, 0.5, backend)
    dy = make_input(shape, device="cuda")
    dx, db = torch.ops.alexnet_kernels.bias_relu_dropout_backward(dy, y, s, 0.5, backend)
    y_ref, dx_ref, db_ref = bias_relu_reference(x, b, s, 0.5, dy)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dx.double(), dx_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(db.double(), db_ref, rtol=1e-4, atol=1e-3)


@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_cuda_graph_replays_draw_fresh_masks(backend):
    require(backend, "cuda")
    x = torch.ones(4096, device="cuda")
    out = {}

    def step():
        out["y"] = dr.dropout(x, 0.5, backend=backend)

    graph = capture_and_replay(step, lambda: None)
    first = out["y"].clone()
    graph.replay()
    torch.cuda.synchronize()
    second = out["y"]
    for y in (first, second):
        assert ((y == 0) | (y == 2)).all() and 0.4 < (y != 0).float().mean().item() < 0.6
    assert not torch.equal(first, second)   # the seed is drawn on the device at every replay


@gpu
@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_gpu_autocast(amp_dtype):
    fc = torch.nn.Linear(64, 32).cuda()
    x = torch.randn(16, 64, device="cuda")
    with torch.autocast("cuda", dtype=amp_dtype):
        h = F.linear(x, fc.weight)
        y = dr.bias_relu_dropout(h, fc.bias.to(amp_dtype), 0.5)
        assert y.dtype == amp_dtype
    y.float().sum().backward()
    assert fc.weight.grad is not None and torch.isfinite(fc.weight.grad).all()
