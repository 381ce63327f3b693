"""conv2d_relu / Conv2dReLU against float64 torch conv + relu: values and all three gradients.

On CPU the Triton kernels run under TRITON_INTERPRET=1 with the five AlexNet geometries scaled down;
the same file runs them at full size on a GPU."""
import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels.conv as conv
from alexnet_kernels import BackendUnavailableError, _backends
from alexnet_kernels.ops import conv as conv_ops

from common import DEVICES, HAS_CUDA, INTERPRETED, capture_and_replay, gpu, make_input, rel_err, require

CL = torch.channels_last

# (N, Cin, H, W, Cout, kernel, stride, padding, groups, bias): AlexNet's layers scaled down, plus odd cases.
LAYERS = {
    "conv1": (1, 3, 19, 17, 8, 11, 4, 0, 1, True),
    "conv2": (1, 4, 7, 7, 8, 5, 1, 2, 2, True),
    "conv3": (2, 8, 5, 7, 12, 3, 1, 1, 1, True),
    "conv4": (1, 8, 5, 5, 8, 3, 1, 1, 2, True),
    "conv5": (1, 8, 5, 5, 6, 3, 1, 1, 2, True),
    "conv3-nobias-batch1": (1, 8, 5, 5, 12, 3, 1, 1, 1, False),
    "rect-kernel-stride2": (1, 4, 7, 6, 4, (3, 2), (2, 1), (1, 0), 1, True),
}
# Triton backward routes: the Triton dgrad/wgrad kernels, or the Triton mask pass + aten's backward.
ROUTES = ["triton", "aten"]


def backends_for(device):
    # "cpu": oneDNN's convolution with the ReLU fused as its post-op (its backward is aten's, like "torch").
    return ["triton", "torch"] + (["cpu"] if device == "cpu" else [])


def params(device_list=DEVICES):
    return [pytest.param(d, b, id="%s-%s" % (d, b)) for d in device_list for b in backends_for(d)]


def make_case(case, dtype=torch.float32, device="cpu", layout="channels_last", seed=0):
    N, C, H, W, Cout, k, stride, padding, groups, has_bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = make_input((N, C, H, W), dtype, device, layout, scale=1.0, seed=seed)
    w = make_input((Cout, C // groups, kh, kw), dtype, device, "contiguous", scale=(C // groups * kh * kw) ** -0.5,
                   seed=seed + 1)
    b = make_input((Cout,), dtype, device, "contiguous", scale=0.3, seed=seed + 2) if has_bias else None
    return x, w, b, stride, padding, groups


def reference(x, w, b, stride, padding, groups, dy):
    """float64 torch conv + relu: (y, dx, dw, db)."""
    xs = x.detach().double().requires_grad_()
    ws = w.detach().double().requires_grad_()
    bs = b.detach().double().requires_grad_() if b is not None else None
    y = torch.relu(F.conv2d(xs, ws, bs, stride, padding, 1, groups))
    grads = torch.autograd.grad(y, [t for t in (xs, ws, bs) if t is not None], dy.double())
    return (y,) + tuple(grads)


def run(x, w, b, stride, padding, groups, dy, **kw):
    xs, ws = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    bs = b.detach().clone().requires_grad_() if b is not None else None
    y = conv.conv2d_relu(xs, ws, bs, stride, padding, 1, groups, **kw)
    grads = torch.autograd.grad(y, [t for t in (xs, ws, bs) if t is not None], dy)
    return (y,) + tuple(grads)


def grad_like(x, w, stride, padding, seed=3):
    kh, kw = w.shape[2:]
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    oh, ow = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
    return make_input((x.shape[0], w.shape[0], oh, ow), x.dtype, x.device.type, "channels_last", 1.0, seed)


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 tests compare with 1e-5: TF32 off (torch's default for convolutions is on)."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("device,backend", params())
@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("route", ROUTES)
def test_fp32_values_and_gradients_match_float64(device, backend, layer, route):
    require(backend, device)
    if backend in ("torch", "cpu") and route == "aten":
        pytest.skip("backend=%r has one backward (aten's); covered by the route='triton' id" % backend)
    x, w, b, stride, padding, groups = make_case(LAYERS[layer], device=device)
    dy = grad_like(x, w, stride, padding)
    got = run(x, w, b, stride, padding, groups, dy, backend=backend, backward_route=route)
    ref = reference(x, w, b, stride, padding, groups, dy)
    assert got[0].shape == ref[0].shape and got[0].dtype == x.dtype
    for name, g, r in zip(("y", "dx", "dw", "db"), got, ref):
        assert rel_err(g, r) <= 1e-5, name


@pytest.mark.parametrize("device,backend", params())
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_layouts(device, backend, layout):
    """NCHW is converted once, channels_last runs natively, a strided view works; the output has
    torch's layout for the same inputs."""
    require(backend, device)
    x, w, b, stride, padding, groups = make_case(LAYERS["conv2"], device=device, layout=layout)
    dy = grad_like(x, w, stride, padding)
    got = run(x, w, b, stride, padding, groups, dy, backend=backend)
    ref = reference(x, w, b, stride, padding, groups, dy)
    for g, r in zip(got, ref):
        assert rel_err(g, r) <= 1e-5
    expect_cl = torch.relu(F.conv2d(x, w, b, stride, padding, 1, groups)).is_contiguous(memory_format=CL)
    assert got[0].is_contiguous(memory_format=CL if expect_cl else torch.contiguous_format)


@pytest.mark.parametrize("device,backend", params())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv4"])
def test_low_precision_within_twice_torch_error(device, backend, dtype, layer):
    require(backend, device, dtype, torch_cpu_low_precision=True)
    x, w, b, stride, padding, groups = make_case(LAYERS[layer], dtype, device)
    dy = grad_like(x, w, stride, padding)
    got = run(x, w, b, stride, padding, groups, dy, backend=backend)
    mine = run(x, w, b, stride, padding, groups, dy, backend="torch")
    ref = reference(x, w, b, stride, padding, groups, dy)
    eps = torch.finfo(dtype).eps
    for name, g, t, r in zip(("y", "dx", "dw", "db"), got, mine, ref):
        assert g.dtype == dtype, name
        assert rel_err(g, r) <= 2 * rel_err(t, r) + eps / 16, name


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's NaN matmul
@pytest.mark.parametrize("device,backend", params())
def test_relu_zeros_and_nan_inf_like_torch(device, backend):
    """Channels whose outputs are all zero (a very negative bias) get exactly zero weight and bias
    gradients; NaN and Inf in the input reach the same outputs as torch's (relu keeps NaN)."""
    require(backend, device)
    x, w, b, stride, padding, groups = make_case(LAYERS["conv3"], device=device)
    b = b.clone()
    b[::2] = -1e4
    dy = grad_like(x, w, stride, padding)
    y, dx, dw, db = run(x, w, b, stride, padding, groups, dy, backend=backend)
    assert (y[:, ::2] == 0).all()
    assert (dw[::2] == 0).all() and (db[::2] == 0).all()
    ref = reference(x, w, b, stride, padding, groups, dy)
    assert rel_err(dx, ref[1]) <= 1e-5
    bad = x.detach().clone()
    bad[0, 1, 2, 3] = float("nan")
    bad[1, 0, 0, 0] = float("inf")
    bad[1, 2, 4, 6] = -float("inf")
    y = conv.conv2d_relu(bad, w, b, stride, padding, 1, groups, backend=backend)
    y_ref = torch.relu(F.conv2d(bad.double(), w.double(), b.double(), stride, padding, 1, groups))
    assert torch.equal(torch.isnan(y), torch.isnan(y_ref))
    assert torch.equal(torch.isinf(y), torch.isinf(y_ref))
    finite = torch.isfinite(y_ref)
    assert rel_err(y[finite], y_ref[finite]) <= 1e-5


@pytest.mark.parametrize("device,backend", params())
@pytest.mark.parametrize("route", ROUTES)
def test_empty_batch(device, backend, route):
    require(backend, device)
    x, w, b, stride, padding, groups = make_case(LAYERS["conv2"], device=device)
    x = x[:0].detach().requires_grad_()
    w, b = w.detach().requires_grad_(), b.detach().requires_grad_()
    y = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend=backend, backward_route=route)
    assert y.shape == (0, 8, 7, 7)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


@pytest.mark.parametrize("device", DEVICES)
def test_triton_kernels_write_every_output(device):
    """Outputs poisoned with NaN before launch: every element is written (forward, dgrad, wgrad, the
    mask pass), and wgrad is deterministic (fixed-order split reduction)."""
    require("triton", device)
    kernels = conv_ops.triton_conv()
    x, w, b, stride, padding, groups = make_case(LAYERS["conv4"], device=device)
    w = w.contiguous(memory_format=CL)
    stride, padding = (stride, stride), (padding, padding)
    ref = reference(x, w, b, stride, padding, groups, grad_like(x, w, stride, padding))
    y = torch.full_like(ref[0], float("nan"), dtype=x.dtype).contiguous(memory_format=CL)
    kernels.conv2d_relu_forward(x, w, b, y, stride, padding, groups, False)
    assert rel_err(y, ref[0]) <= 1e-5
    dy = grad_like(x, w, stride, padding, seed=7)
    ref = reference(x, w, b, stride, padding, groups, dy)
    dx = torch.full_like(x, float("nan"))
    kernels.conv2d_relu_dgrad(dy, y, w, dx, stride, padding, groups, False)
    assert rel_err(dx, ref[1]) <= 1e-5
    dw, db = kernels.conv2d_relu_wgrad(dy, y, x, tuple(w.shape), stride, padding, groups, False)
    dw2, db2 = kernels.conv2d_relu_wgrad(dy, y, x, tuple(w.shape), stride, padding, groups, False)
    assert rel_err(dw, ref[2]) <= 1e-5 and rel_err(db, ref[3]) <= 1e-5
    assert torch.equal(dw, dw2) and torch.equal(db, db2)
    g = torch.full_like(y, float("nan"))
    db3 = kernels.relu_mask_bias_grad(dy, y, g)
    assert torch.equal(g, torch.where(y > 0, dy, torch.zeros_like(dy)))
    assert rel_err(db3, ref[3]) <= 1e-5


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_gradcheck_float64(backend):
    """Our autograd formula (mask from the saved output, aten's backward) in float64."""
    x = torch.randn(1, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: conv.conv2d_relu(*t, 2, 1, 1, 2, backend=backend), (x, w, b))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_float64_bias_gradient_is_summed_in_float64(backend):
    """d(bias) of a float64 conv is a float64 sum (it was summed in fp32 and cast back: ~1e-7 off, which
    gradcheck's default tolerance does not see)."""
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    got = torch.autograd.grad(conv.conv2d_relu(x, w, b, backend=backend), (x, w, b), dy)
    ref = torch.autograd.grad(torch.relu(F.conv2d(x, w, b)), (x, w, b), dy)
    for g, r in zip(got, ref):
        assert g.dtype == torch.float64 and rel_err(g, r) <= 1e-12

def test_unbatched_input_and_module_repr():
    x = make_input((3, 9, 9), seed=1)
    m = conv.Conv2dReLU(3, 4, 3, padding=1, backend="torch")
    assert m(x).shape == (4, 9, 9)
    assert torch.allclose(m(x), torch.relu(m._conv_forward(x, m.weight, m.bias)), rtol=1e-5, atol=1e-6)
    assert repr(m).startswith("alexnet_kernels.Conv2dReLU(3, 4, kernel_size=(3, 3)")


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_module_state_dict_round_trip_with_nn_conv2d(backend):
    require(backend, "cpu")
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(4, 8, 5, padding=2, groups=2)
    torch.manual_seed(0)
    m = conv.Conv2dReLU(4, 8, 5, padding=2, groups=2, backend=backend)
    assert isinstance(m, torch.nn.Conv2d)
    assert m.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(m.state_dict()[k], v) for k, v in ref.state_dict().items())  # same init
    with torch.no_grad():
        ref.weight.mul_(1.5)
    m.load_state_dict(ref.state_dict())
    back = torch.nn.Conv2d(4, 8, 5, padding=2, groups=2)
    back.load_state_dict(m.state_dict())
    x = make_input((2, 4, 7, 7), layout="channels_last", seed=4)
    assert rel_err(m(x), torch.relu(ref(x))) <= 1e-5
    assert torch.equal(back(x), ref(x))
    nobias = conv.Conv2dReLU(4, 8, 3, bias=False, backend=backend)
    assert nobias.bias is None and "bias" not in nobias.state_dict()


def test_module_padding_modes():
    torch.manual_seed(0)
    for mode in ("reflect", "replicate", "circular"):
        ref = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode)
        m = conv.Conv2dReLU(3, 4, 3, padding=1, padding_mode=mode, backend="torch")
        m.load_state_dict(ref.state_dict())
        x = make_input((1, 3, 6, 5), seed=5)
        assert rel_err(m(x), torch.relu(ref(x))) <= 1e-6


@pytest.mark.parametrize("device,backend", params())
def test_opcheck(device, backend):
    require(backend, device)
    x, w, b, stride, padding, groups = make_case(LAYERS["conv4"], device=device)
    args = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), [stride] * 2, [padding] * 2, groups, False,
            backend, "triton")
    torch.library.opcheck(torch.ops.alexnet_kernels.conv2d_relu_forward, args)
    nobias = (x, w, None) + args[3:]
    torch.library.opcheck(torch.ops.alexnet_kernels.conv2d_relu_forward, nobias)
    y = conv.conv2d_relu(x.detach(), w.detach(), b.detach(), stride, padding, 1, groups, backend=backend)
    dy = grad_like(x, w, stride, padding)
    torch.library.opcheck(torch.ops.alexnet_kernels.conv2d_relu_backward,
                          (dy, x.detach(), w.detach(), y, [stride] * 2, [padding] * 2, groups, [True, True, True],
                           False, backend, "triton"))


@pytest.mark.parametrize("device,backend", params())
def test_torch_compile_fullgraph(device, backend):
    require(backend, device)
    torch._dynamo.reset()
    x, w, b, stride, padding, groups = make_case(LAYERS["conv2"], device=device)
    dy = grad_like(x, w, stride, padding)

    def f(x, w, b):
        return conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend=backend)

    compiled = torch.compile(f, fullgraph=True)
    got = run(x, w, b, stride, padding, groups, dy, backend=backend)
    xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y = compiled(xs, ws, bs)
    grads = torch.autograd.grad(y, (xs, ws, bs), dy)
    for g, r in zip((y,) + grads, got):
        assert rel_err(g, r) <= 1e-6


def test_delegated_cases_equal_torch():
    """dilation != 1 and padding='same' run on torch's convolution (documented)."""
    x = make_input((1, 4, 9, 9), seed=6)
    w = make_input((4, 2, 3, 3), seed=7, scale=0.3)
    b = make_input((4,), seed=8)
    for kw in ({"dilation": 2, "padding": 2}, {"padding": "same"}, {"padding": "valid"}):
        got = conv.conv2d_relu(x, w, b, groups=2, backend="triton" if INTERPRETED or HAS_CUDA else "torch", **kw)
        assert rel_err(got, torch.relu(F.conv2d(x.double(), w.double(), b.double(), groups=2, **kw))) <= 1e-5


def test_autocast_casts_like_conv2d():
    x = make_input((1, 4, 7, 7), seed=9)
    w = make_input((8, 2, 5, 5), seed=10, scale=0.1)
    b = make_input((8,), seed=11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv.conv2d_relu(x, w, b, 1, 2, 1, 2, backend="torch")
        y_t = torch.relu(F.conv2d(x, w, b, 1, 2, 1, 2))
    assert y.dtype == y_t.dtype == torch.bfloat16
    assert torch.equal(y, y_t)



def test_autocast_leaves_float64_alone_like_conv2d():
    """Autocast casts only float32/16 tensors: float64 ones keep their dtype (torch's is_eligible), so a
    float64 conv under autocast stays float64, and float32 input with a float64 weight is rejected."""
    x = make_input((1, 4, 7, 7), seed=9).double()
    w = make_input((8, 4, 3, 3), seed=10, scale=0.1).double()
    b = make_input((8,), seed=11).double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv.conv2d_relu(x, w, b, backend="torch")
        y_t = torch.relu(F.conv2d(x, w, b))
        with pytest.raises(TypeError, match="same dtype"):
            conv.conv2d_relu(x.float(), w, b, backend="torch")
    assert y.dtype == y_t.dtype == torch.float64
    assert torch.equal(y, y_t)

def test_auto_on_cpu_is_cpu_and_measures_no_backend():
    """"auto" on cpu is the oneDNN path ("cpu", or "torch" without the extension): no backend measurement
    (only the layout, see cpu_layout_choices)."""
    x, w, b, stride, padding, groups = make_case(LAYERS["conv3"])
    expected = "cpu" if _backends.backend_error("cpu", x.device) is None else "torch"
    assert conv_ops.BACKENDS.resolve("auto", x, "conv2d_relu") == expected
    before = conv.measured_choices()
    y = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="auto")
    assert rel_err(y, torch.relu(F.conv2d(x.double(), w.double(), b.double(), stride, padding))) <= 1e-5
    assert conv.measured_choices() == before


X = torch.randn(1, 4, 7, 7)
W = torch.randn(8, 2, 3, 3)


@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((X, torch.randn(8, 4, 3, 3)), {"groups": 2}, ValueError, "expects 8 input channels"),
    ((X, torch.randn(6, 2, 3, 3)), {"groups": 4}, ValueError, "divisible by groups"),
    ((X, torch.randn(8, 4, 3)), {}, ValueError, "weight must be 4-D"),
    ((X, W, torch.randn(7)), {"groups": 2}, ValueError, "bias must be 1-D with out_channels = 8"),
    ((X, torch.randn(8, 2, 9, 9)), {"groups": 2}, ValueError, "larger than the padded input"),
    ((X.long(), W.long()), {"groups": 2}, TypeError, "floating-point"),
    ((X, W.double()), {"groups": 2}, TypeError, "same dtype"),
    ((torch.randn(4, 7), W), {"groups": 2}, ValueError, "3-D .* or 4-D"),
    ((X[:, :, :0], W), {"groups": 2}, ValueError, "only the batch dimension may be empty"),
    ((X, W), {"groups": 0}, ValueError, "groups must be a positive int"),
    ((X, W), {"groups": 2, "stride": 0}, ValueError, "stride must be >= 1"),
    ((X, W), {"groups": 2, "padding": -1}, ValueError, "padding must be >= 0"),
    ((X, W), {"groups": 2, "padding": "full"}, ValueError, "'valid' or 'same'"),
    ((X, W), {"groups": 2, "backend": "fastest"}, ValueError, "backend must be one of"),
    ((X, W), {"groups": 2, "backward_route": "cudnn"}, ValueError, "backward_route must be one of"),
    ((X, W), {"groups": 2, "backend": "cuda"}, BackendUnavailableError, "backend='cuda' is not available"),
    ((X.double(), W.double()), {"groups": 2, "backend": "triton"}, BackendUnavailableError,
     "(does not support dtype|not available)"),
])
def test_bad_inputs_raise_clear_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        conv.conv2d_relu(*args, **kwargs)


def test_triton_on_cpu_without_interpreter_says_why():
    if INTERPRETED:
        pytest.skip("Triton runs on cpu tensors under TRITON_INTERPRET=1 (this run)")
    with pytest.raises(BackendUnavailableError, match="cuda tensors"):
        conv.conv2d_relu(X, W, groups=2, backend="triton")


# --- GPU: the five AlexNet layers at full size ------------------------------------------------------

FULL = {  # batch 16 at the 2012 network's sizes (full channel counts; groups=2 where the towers split)
    "conv1": (16, 3, 227, 227, 96, 11, 4, 0, 1, True),
    "conv2": (16, 96, 27, 27, 256, 5, 1, 2, 2, True),
    "conv3": (16, 256, 13, 13, 384, 3, 1, 1, 1, True),
    "conv4": (16, 384, 13, 13, 384, 3, 1, 1, 2, True),
    "conv5": (16, 384, 13, 13, 256, 3, 1, 1, 2, True),
}


@gpu
@pytest.mark.parametrize("layer", list(FULL))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("route", ROUTES)
def test_gpu_alexnet_layers(layer, dtype, route):
    x, w, b, stride, padding, groups = make_case(FULL[layer], dtype, "cuda")
    dy = grad_like(x, w, stride, padding)
    got = run(x, w, b, stride, padding, groups, dy, backend="triton", backward_route=route)
    mine = run(x, w, b, stride, padding, groups, dy, backend="torch")
    ref = reference(x, w, b, stride, padding, groups, dy)
    eps = torch.finfo(dtype).eps
    for name, g, t, r in zip(("y", "dx", "dw", "db"), got, mine, ref):
        if dtype == torch.float32:
            assert rel_err(g, r) <= 1e-5, name  # TF32 off (fixture)
        else:
            assert rel_err(g, r) <= 2 * rel_err(t, r) + eps / 16, name


@gpu
@pytest.mark.parametrize("layer", ["conv1", "conv3", "conv4"])
def test_gpu_tf32_within_twice_cudnn_tf32_error(layer):
    torch.backends.cudnn.allow_tf32 = True  # the fixture restores it
    x, w, b, stride, padding, groups = make_case(FULL[layer], torch.float32, "cuda")
    dy = grad_like(x, w, stride, padding)
    got = run(x, w, b, stride, padding, groups, dy, backend="triton")
    mine = run(x, w, b, stride, padding, groups, dy, backend="torch")
    ref = reference(x, w, b, stride, padding, groups, dy)
    for name, g, t, r in zip(("y", "dx", "dw", "db"), got, mine, ref):
        assert rel_err(g, r) <= max(2 * rel_err(t, r), 1e-5) + 2 ** -12, name


@gpu
def test_gpu_auto_measures_once_and_records_the_choice():
    x, w, b, stride, padding, groups = make_case(FULL["conv3"], torch.bfloat16, "cuda")
    y1 = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="auto")
    choices = conv.measured_choices()
    forward = [v for k, v in choices.items() if k[0] == "forward" and k[1] == tuple(x.shape)]
    # Candidates: triton, torch and (when alexnet_kernels._C has it) the CUDA C++ kernel.
    assert len(forward) == 1 and forward[0][0] in forward[0][1] and set(forward[0][1]) >= {"triton", "torch"}
    assert set(forward[0][1]) <= {"triton", "cuda", "torch"}
    y2 = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="auto")
    assert torch.equal(y1, y2) and len(conv.measured_choices()) == len(choices)


@gpu
@pytest.mark.parametrize("route", ROUTES)
def test_gpu_cuda_graph_capture(route):
    x, w, b, stride, padding, groups = make_case(FULL["conv2"], torch.bfloat16, "cuda")
    x.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    dy = grad_like(x, w, stride, padding)
    out = {}

    def step():
        y = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="triton", backward_route=route)
        out["y"] = y
        out["grads"] = torch.autograd.grad(y, (x, w, b), dy)

    def refill():
        x.copy_(torch.randn_like(x))

    capture_and_replay(step, refill)
    ref = run(x.detach(), w.detach(), b.detach(), stride, padding, groups, dy, backend="triton", backward_route=route)
    for g, r in zip((out["y"],) + out["grads"], ref):
        if route == "triton":  # our kernels sum in a fixed order: the replay is bit-identical
            assert torch.equal(g, r)
        else:  # cuDNN's wgrad may sum in a varying order
            assert rel_err(g, r) <= 2 ** -10


@gpu
def test_gpu_autocast_runs_triton_in_bf16():
    x, w, b, stride, padding, groups = make_case(FULL["conv2"], torch.float32, "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="triton")
        y_t = torch.relu(F.conv2d(x, w, b, stride, padding, 1, groups))
    assert y.dtype == y_t.dtype == torch.bfloat16
    ref = torch.relu(F.conv2d(x.double(), w.double(), b.double(), stride, padding, 1, groups))
    assert rel_err(y, ref) <= 2 * rel_err(y_t, ref) + 2 ** -12


@gpu
def test_gpu_64bit_indexing():
    """An output of more than 2**31 elements (fp16, ~4.3 GB): the last sample is right."""
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2 ** 30:
        pytest.skip("needs a GPU with 24 GiB")
    N, C, H = 66, 8, 2048  # x: 66*8*2048*2048 = 2.2e9 elements
    x = torch.randn(N, C, H, H, device="cuda", dtype=torch.float16).to(memory_format=CL)
    w = torch.randn(8, 8, 1, 1, device="cuda", dtype=torch.float16) * 0.3
    y = conv.conv2d_relu(x, w, None, backend="triton")
    last = torch.relu(F.conv2d(x[-1:], w))
    assert torch.equal(y[-1:].isnan(), last.isnan()) and rel_err(y[-1:], last) <= 1e-3


# --- no per-call layout copies (issue 17) ------------------------------------------------------------------

class _CopyCounter:
    """Wraps ops/conv.py's channels_last conversion: records the shape of every call that really copied."""

    def __init__(self, monkeypatch):
        self.copies = []
        real = conv_ops._cl

        def counted(t):
            out = real(t)
            if out.data_ptr() != t.data_ptr() or out.stride() != t.stride():
                self.copies.append(tuple(t.shape))
            return out
        monkeypatch.setattr(conv_ops, "_cl", counted)


def _triton_backend():
    require("triton", "cpu")
    return "triton"


def test_nchw_weight_copied_once_per_step_and_every_update_seen(monkeypatch):
    backend = _triton_backend()
    counter = _CopyCounter(monkeypatch)
    x = make_input((2, 4, 7, 7)).to(memory_format=CL).requires_grad_()
    w = torch.nn.Parameter(make_input((6, 2, 3, 3), scale=0.3))  # NCHW, as nn.Conv2d creates it
    b = torch.nn.Parameter(make_input((6,), scale=0.3))

    def step():
        y = conv.conv2d_relu(x, w, b, padding=1, groups=2, backend=backend, backward_route="triton")
        y.sum().backward()
        return y.detach()

    step()
    assert counter.copies == [tuple(w.shape)]  # the forward's copy, reused by the backward's dgrad
    step()
    assert counter.copies == [tuple(w.shape)] * 2  # one per step: a later forward never reuses it
    with torch.no_grad():
        w.add_(0.25)  # an optimizer step: in place, a new version
    y = step()
    assert counter.copies == [tuple(w.shape)] * 3
    ref = torch.relu(F.conv2d(x.detach().double(), w.detach().double(), b.detach().double(), padding=1, groups=2))
    assert rel_err(y, ref) <= 1e-5
    with torch.no_grad():
        w.data = w.data.clone()  # new storage, same version counter value possible
        w.data.mul_(-1.0)
    y = step()
    ref = torch.relu(F.conv2d(x.detach().double(), w.detach().double(), b.detach().double(), padding=1, groups=2))
    assert rel_err(y, ref) <= 1e-5
    w.data.mul_(0.5)  # in place through .data: w._version does not change (a cross-step cache would miss it)
    y = step()
    ref = torch.relu(F.conv2d(x.detach().double(), w.detach().double(), b.detach().double(), padding=1, groups=2))
    assert rel_err(y, ref) <= 1e-5


def test_nchw_input_converted_once_per_forward_and_backward(monkeypatch):
    backend = _triton_backend()
    counter = _CopyCounter(monkeypatch)
    x = make_input((2, 4, 6, 5)).requires_grad_()  # NCHW activations
    w = make_input((3, 4, 3, 3), scale=0.3).to(memory_format=CL).requires_grad_()
    y = conv.conv2d_relu(x, w, None, padding=1, backend=backend, backward_route="triton")
    dy = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    assert counter.copies == [tuple(x.shape)]  # the forward's copy of x serves the backward's wgrad too
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = torch.relu(F.conv2d(x64, w64, None, padding=1))
    dx_ref, dw_ref = torch.autograd.grad(ref, (x64, w64), dy.double())
    assert rel_err(dx, dx_ref) <= 1e-5 and rel_err(dw, dw_ref) <= 1e-5
    # dx in torch's layout for this x and weight (a channels_last weight: channels_last), as before
    assert dx.is_contiguous(memory_format=CL)


def test_network_of_conv2d_relu_copies_only_its_input(monkeypatch):
    """Conv2dReLU stores its weight channels_last, so its output is channels_last and the next layer copies
    nothing: one copy (the NCHW input, at the first layer) for a whole forward and backward."""
    backend = _triton_backend()
    torch.manual_seed(0)
    net = torch.nn.Sequential(conv.Conv2dReLU(3, 8, 3, padding=1, backend=backend, backward_route="triton"),
                              conv.Conv2dReLU(8, 6, 3, stride=2, groups=2, backend=backend,
                                              backward_route="triton"))
    assert all(m.weight.is_contiguous(memory_format=CL) for m in net)
    counter = _CopyCounter(monkeypatch)
    x = make_input((2, 3, 9, 9))
    y = net(x)
    y.sum().backward()
    assert counter.copies == [tuple(x.shape)]
    assert y.is_contiguous(memory_format=CL)
    with torch.no_grad():  # the same values as nn.Conv2d + ReLU with these parameters
        h = torch.relu(F.conv2d(x, net[0].weight, net[0].bias, padding=1))
        ref = torch.relu(F.conv2d(h, net[1].weight, net[1].bias, stride=2, groups=2))
    assert rel_err(y, ref) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_optimize_stores_fused_conv_weights_channels_last(device):
    """By default channels_last on a GPU (the kernels' layout), as they are on the CPU (backend "cpu" measures
    the layout per shape); True / False force it."""
    import alexnet_kernels
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).to(device)
    w = model[0].weight
    alexnet_kernels.optimize(model)
    assert model[0].weight is w
    assert w.is_contiguous(memory_format=CL) if device != "cpu" else w.is_contiguous()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).to(device)
    alexnet_kernels.optimize(model, channels_last_weights=True)
    assert model[0].weight.is_contiguous(memory_format=CL)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).to(device)
    alexnet_kernels.optimize(model, channels_last_weights=False)
    assert model[0].weight.is_contiguous()
    with pytest.raises(TypeError, match="channels_last_weights"):
        alexnet_kernels.optimize(model, channels_last_weights=1)


# --- backend="cpu": oneDNN's fused conv + ReLU, layout measured per case ----------------------------------

def require_onednn(dtype=torch.float32):
    err = conv_ops.onednn_relu_error(dtype)
    if err is not None:
        pytest.skip("oneDNN's fused conv + ReLU is unavailable: %s" % err)


@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("w_layout", ["contiguous", "channels_last"])
def test_cpu_fused_post_op_matches_float64_in_every_layout(x_layout, w_layout):
    """The fused post-op path (not the composite fallback) against the float64 oracle, for each layout pair:
    the output has torch's layout whichever layout the measurement chose, and the choice is recorded."""
    require("cpu", "cpu")
    require_onednn()
    x, w, b, stride, padding, groups = make_case(LAYERS["conv2"], layout=x_layout, seed=20)
    w = w.contiguous(memory_format=CL if w_layout == "channels_last" else torch.contiguous_format)
    dy = grad_like(x, w, stride, padding)
    got = run(x, w, b, stride, padding, groups, dy, backend="cpu")
    ref = reference(x, w, b, stride, padding, groups, dy)
    for name, g, r in zip(("y", "dx", "dw", "db"), got, ref):
        assert rel_err(g, r) <= 1e-5, name
    expect = conv_ops.output_memory_format(x, w)
    assert got[0].is_contiguous(memory_format=expect)
    key = (tuple(x.shape), tuple(w.shape), (stride, stride), (padding, padding), groups, x.dtype,
           x.is_contiguous(), w.is_contiguous(), torch.get_num_threads())
    chosen, times = conv_ops.cpu_layout_choices()[key]
    assert chosen in conv_ops.CPU_LAYOUTS and set(times) == set(conv_ops.CPU_LAYOUTS)
    assert times[chosen] == min(times.values())


def test_cpu_runs_the_onednn_post_op(monkeypatch):
    """backend='cpu' calls oneDNN's fused op once per forward (no separate ReLU pass)."""
    require("cpu", "cpu")
    require_onednn()
    calls = []
    real = conv_ops._onednn_conv_relu
    monkeypatch.setattr(conv_ops, "_onednn_conv_relu", lambda *a: calls.append(a) or real(*a))
    x, w, b, stride, padding, groups = make_case(LAYERS["conv3"], seed=21)
    conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="cpu")  # may measure: several calls
    calls.clear()
    y = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="cpu")
    assert len(calls) == 1
    assert rel_err(y, torch.relu(F.conv2d(x.double(), w.double(), b.double(), stride, padding))) <= 1e-5


@pytest.mark.parametrize("where", ["input", "weight", "bias"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_cpu_non_finite_anywhere_matches_conv_then_relu(where, value):
    """oneDNN's fused ReLU maps NaN to 0 where torch.relu keeps it: a NaN or infinity in x, the weight or the
    bias must reach the outputs torch's conv then relu gives (the finiteness check routes it)."""
    require("cpu", "cpu")
    x, w, b, stride, padding, groups = make_case(LAYERS["conv3"], seed=24)
    x, w, b = x.detach().clone(), w.detach().clone(), b.detach().clone()
    {"input": x[0, 1, 2], "weight": w[3, 0, 1], "bias": b[5:6]}[where][0] = value
    y = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="cpu")
    # Where NaN lands is torch's float32 convolution's business (its float64 one multiplies the zero padding by
    # a NaN weight, oneDNN skips the padding); the values against the float64 oracle.
    y_torch = torch.relu(F.conv2d(x, w, b, stride, padding, 1, groups))
    assert torch.equal(torch.isnan(y), torch.isnan(y_torch))
    assert torch.equal(torch.isinf(y), torch.isinf(y_torch))
    y_ref = torch.relu(F.conv2d(x.double(), w.double(), b.double(), stride, padding, 1, groups))
    finite = torch.isfinite(y_torch) & torch.isfinite(y_ref)
    assert finite.any() and rel_err(y[finite], y_ref[finite]) <= 1e-5


def test_cpu_finite_values_whose_sum_overflows_stay_exact():
    """Finite inputs whose float32 sum overflows take the composite path: still torch's values."""
    require("cpu", "cpu")
    x, w, b, stride, padding, groups = make_case(LAYERS["conv3"], seed=25)
    x = x.detach().clone()
    x[0, :, :2] = 3e38  # finite, but their float32 sum is infinite
    y = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="cpu")
    y_ref = torch.relu(F.conv2d(x, w, b, stride, padding, 1, groups))
    assert torch.equal(torch.isnan(y), torch.isnan(y_ref)) and torch.equal(torch.isinf(y), torch.isinf(y_ref))
    finite = torch.isfinite(y_ref)
    assert torch.equal(y[finite], y_ref[finite])


def test_cpu_bfloat16_within_twice_torch_error():
    require("cpu", "cpu")
    require_onednn(torch.bfloat16)
    x, w, b, stride, padding, groups = make_case(LAYERS["conv1"], torch.bfloat16, seed=22)
    dy = grad_like(x, w, stride, padding)
    got = run(x, w, b, stride, padding, groups, dy, backend="cpu")
    mine = run(x, w, b, stride, padding, groups, dy, backend="torch")
    ref = reference(x, w, b, stride, padding, groups, dy)
    eps = torch.finfo(torch.bfloat16).eps
    for name, g, t, r in zip(("y", "dx", "dw", "db"), got, mine, ref):
        assert g.dtype == torch.bfloat16 and rel_err(g, r) <= 2 * rel_err(t, r) + eps / 16, name


def test_cpu_float64_takes_the_composite_and_says_why():
    assert "float64" in conv_ops.onednn_relu_error(torch.float64)
    x, w, b, stride, padding, groups = make_case(LAYERS["conv4"], torch.float64, seed=23)
    y = conv.conv2d_relu(x, w, b, stride, padding, 1, groups, backend="cpu")
    assert torch.equal(y, torch.relu(F.conv2d(x, w, b, stride, padding, 1, groups)))
