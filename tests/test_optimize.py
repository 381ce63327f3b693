"""alexnet_kernels.optimize (swapping our modules into any model) and the LinearReLUDropout module."""
import copy

import pytest
import torch
import torch.nn as nn

import alexnet_kernels
from alexnet_kernels.conv import Conv2dReLU
from alexnet_kernels.dropout import Dropout, LinearReLUDropout
from alexnet_kernels.lrn import LocalResponseNorm
from alexnet_kernels.pool import MaxPool2d
from common import make_input, rel_err, require


def assert_same_state(model, original):
    a, b = model.state_dict(), original.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype and a[k].device == b[k].device, k


def outputs_and_grads(model, x, weights):
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y = model(x)
    (y * weights).sum().backward()
    return y.detach(), x.grad, [p.grad for p in model.parameters()]


def assert_same_function(model, original, x):
    weights = make_input(tuple(original(x).shape), seed=11)
    y, dx, grads = outputs_and_grads(model, x, weights)
    y_ref, dx_ref, grads_ref = outputs_and_grads(original, x, weights)
    assert rel_err(y, y_ref) < 1e-5
    assert rel_err(dx, dx_ref) < 1e-4
    for g, g_ref in zip(grads, grads_ref):
        assert rel_err(g, g_ref) < 1e-4


@pytest.fixture(scope="module")
def torchvision_alexnet():
    torchvision = pytest.importorskip("torchvision", reason="the torchvision-model cases need torchvision")
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None)


def test_torchvision_alexnet_types_and_state(torchvision_alexnet):
    original = torchvision_alexnet
    model = alexnet_kernels.optimize(original, inplace=False)
    f, c = model.features, model.classifier
    assert [type(m) for m in f] == [Conv2dReLU, nn.Identity, MaxPool2d, Conv2dReLU, nn.Identity, MaxPool2d,
                                    Conv2dReLU, nn.Identity, Conv2dReLU, nn.Identity, Conv2dReLU, nn.Identity,
                                    MaxPool2d]
    assert [type(m) for m in c] == [Dropout, LinearReLUDropout, nn.Identity, nn.Identity, LinearReLUDropout,
                                    nn.Identity, nn.Linear]
    assert (c[0].p, c[1].p, c[4].p) == (0.5, 0.5, 0.0)
    assert type(model.avgpool) is nn.AdaptiveAvgPool2d
    # the original is untouched by inplace=False
    assert type(original.features[0]) is nn.Conv2d and type(original.classifier[0]) is nn.Dropout
    assert_same_state(model, original)


def test_torchvision_alexnet_same_outputs_and_gradients(torchvision_alexnet):
    """Eval mode (our dropout masks differ from torch's by design); the train-mode graph with p = 0 is
    compared on the small Sequential below, which has the same patterns at a fraction of the cost."""
    original = torchvision_alexnet.eval()
    model = alexnet_kernels.optimize(original, inplace=False)
    assert not any(m.training for m in model.modules())
    # 127x127: the adaptive average pool takes any size, and the convs' cost shrinks 3x
    assert_same_function(model, original, make_input((1, 3, 127, 127), scale=1.0, seed=1))


def test_torchvision_googlenet_ceil_mode_pools_run_like_torch():
    """googlenet's MaxPool2d(3, 2, ceil_mode=True) meets a 2x2 map at a 16x16 input: a window torch accepts
    though the floor-mode output would be empty (the C++ path refused it)."""
    torchvision = pytest.importorskip("torchvision", reason="the torchvision-model cases need torchvision")
    torch.manual_seed(0)
    original = torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=False).eval()
    model = alexnet_kernels.optimize(original, inplace=False)
    assert any(type(m) is MaxPool2d and m.ceil_mode for m in model.modules())
    x = make_input((1, 3, 16, 16), scale=1.0, seed=2)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))   # max-pool values are torch's bit for bit


def test_inplace_keeps_the_parameter_objects(torchvision_alexnet):
    model = copy.deepcopy(torchvision_alexnet)
    params = {name: p for name, p in model.named_parameters()}
    model.features[0].weight.requires_grad_(False)
    out = alexnet_kernels.optimize(model)
    assert out is model
    for name, p in model.named_parameters():
        assert p is params[name], name
    assert not model.features[0].weight.requires_grad and model.features[3].weight.requires_grad


def small_sequential():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(8, 6, 3, bias=False), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 16), nn.ReLU(inplace=True), nn.Dropout(0.0),
        nn.Linear(16, 12, bias=False), nn.ReLU(),
        nn.Linear(12, 4))


def test_small_sequential_types_outputs_and_gradients():
    torch.manual_seed(1)
    original = small_sequential().train()
    model = alexnet_kernels.optimize(copy.deepcopy(original))
    assert [type(m) for m in model] == [Conv2dReLU, nn.Identity, LocalResponseNorm, MaxPool2d, Conv2dReLU,
                                        nn.Identity, nn.Flatten, LinearReLUDropout, nn.Identity, nn.Identity,
                                        LinearReLUDropout, nn.Identity, nn.Linear]
    assert model[4].bias is None and model[10].bias is None
    assert (model[2].size, model[2].alpha, model[2].beta, model[2].k) == (5, 1e-4, 0.75, 2.0)
    assert_same_state(model, original)
    assert_same_function(model, original, make_input((2, 3, 13, 13), seed=2))


def test_printed_model_tells_our_modules_from_torchs():
    printed = str(alexnet_kernels.optimize(small_sequential()))
    for name in ("Conv2dReLU", "LocalResponseNorm", "MaxPool2d", "LinearReLUDropout"):
        assert "): alexnet_kernels.%s(" % name in printed, name
    assert "): Linear(in_features=12" in printed and "): Flatten(" in printed  # torch's stay torch's


def test_backend_is_passed_to_every_new_module():
    model = alexnet_kernels.optimize(small_sequential(), backend="torch")
    swapped = [m for m in model if hasattr(m, "backend")]
    assert len(swapped) == 6 and all(m.backend == "torch" for m in swapped)


def test_dtype_device_and_mode_are_kept():
    model = small_sequential().double().eval()
    alexnet_kernels.optimize(model)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in model.parameters())
    assert not any(m.training for m in model.modules())


class ConvReLUNet(nn.Module):
    """Not an nn.Sequential: the order of calls is not visible, so nothing is fused (leaves still swap)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(self.relu(self.conv(x)))


class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


class MyReLU(nn.ReLU):
    pass


def test_non_sequential_and_unsupported_layers_are_left_alone():
    model = nn.Sequential(
        ConvReLUNet(),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.ReLU(),
        MyConv(4, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), MyReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.LeakyReLU(),
        nn.Linear(5, 5), nn.Tanh(),
        nn.Conv2d(4, 4, 1))                                # last: no ReLU after it
    original = copy.deepcopy(model)
    alexnet_kernels.optimize(model)
    inner = model[0]
    assert type(inner.conv) is nn.Conv2d and type(inner.relu) is nn.ReLU and type(inner.pool) is MaxPool2d
    for a, b in zip(list(model)[1:], list(original)[1:]):
        assert type(a) is type(b)
    assert_same_state(model, original)


def test_string_padding_is_fused():
    original = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.Conv2d(4, 2, 3, padding="valid"),
                             nn.ReLU())
    model = alexnet_kernels.optimize(copy.deepcopy(original))
    assert [type(m) for m in model] == [Conv2dReLU, nn.Identity, Conv2dReLU, nn.Identity]
    assert model[0].padding == "same"
    assert_same_function(model, original, make_input((2, 3, 9, 9), seed=8))


def test_idempotent_and_replaces_a_root_leaf():
    model = alexnet_kernels.optimize(small_sequential())
    types = [type(m) for m in model]
    alexnet_kernels.optimize(model)
    assert [type(m) for m in model] == types
    pool = alexnet_kernels.optimize(nn.MaxPool2d(3, 2, ceil_mode=True))
    assert type(pool) is MaxPool2d and pool.ceil_mode and pool.kernel_size == 3 and pool.stride == 2


def test_inplace_dropout_becomes_out_of_place():
    model = alexnet_kernels.optimize(nn.Sequential(nn.Dropout(0.5, inplace=True))).train()
    assert type(model[0]) is Dropout and not model[0].inplace
    x = torch.ones(64, 64)
    y = model(x)
    assert torch.equal(x, torch.ones(64, 64)) and 0.4 < (y == 0).float().mean().item() < 0.6


def test_optimize_the_torch_alexnet():
    """The kernels="torch" AlexNet keeps its unfused towers but gets our LRN, max-pool and dropout."""
    from alexnet import AlexNet
    torch.manual_seed(2)
    ref = AlexNet(kernels="torch").eval()
    model = alexnet_kernels.optimize(copy.deepcopy(ref))
    assert type(model.tower_a.relu_lrn_pool1[1]) is LocalResponseNorm
    assert type(model.tower_b.relu_dropout6[1]) is Dropout
    x = make_input((1, 3, 227, 227), scale=1.0, seed=3)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) < 1e-5


# --- LinearReLUDropout ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["cpu", "triton", "torch"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_relu_dropout_matches_linear_relu(backend, bias):
    require(backend, "cpu")
    torch.manual_seed(3)
    fused = LinearReLUDropout(24, 10, bias=bias, p=0.0, backend=backend)
    linear = nn.Linear(24, 10, bias=bias)
    linear.load_state_dict(fused.state_dict())
    assert list(fused.state_dict()) == list(linear.state_dict())
    x = make_input((3, 5, 24), seed=4)
    assert_same_function(fused, nn.Sequential(linear, nn.ReLU()), x)


def test_linear_relu_dropout_drops_in_training_only():
    torch.manual_seed(5)
    fc = LinearReLUDropout(32, 256, p=0.5)
    with torch.no_grad():
        fc.bias.fill_(10.0)  # every unit positive: the zeros are the dropped ones
    x = make_input((8, 32), scale=0.1, seed=6)
    y = fc(x)
    assert 0.45 < (y == 0).float().mean().item() < 0.55
    kept = y != 0
    assert torch.allclose(y[kept], 2 * torch.relu(nn.functional.linear(x, fc.weight, fc.bias))[kept])
    fc.eval()
    assert torch.allclose(fc(x), torch.relu(nn.functional.linear(x, fc.weight, fc.bias)), atol=1e-6)
    assert "p=0.5" in repr(fc)


def test_linear_relu_dropout_autocast_and_bad_p():
    fc = LinearReLUDropout(16, 8, p=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fc(make_input((4, 16), seed=7))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert fc.weight.grad is not None and fc.bias.grad.dtype == torch.float32
    with pytest.raises(ValueError, match="between 0 and 1"):
        LinearReLUDropout(4, 4, p=1.5)


@pytest.mark.parametrize("args,kwargs,exc,match", [
    (("not a model",), {}, TypeError, "must be a torch.nn.Module"),
    ((nn.ReLU(),), {"inplace": "yes"}, TypeError, "inplace must be a bool"),
    ((nn.ReLU(),), {"backend": "fastest"}, ValueError, "backend must be one of"),
])
def test_bad_arguments_raise_clear_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        alexnet_kernels.optimize(*args, **kwargs)


@pytest.mark.parametrize("linear_training", [True, False], ids=["linear-train", "linear-eval"])
def test_dropout_in_another_mode_than_its_linear_is_not_fused(linear_training):
    """The fused LinearReLUDropout follows the Linear's mode: fusing a Dropout frozen in eval into a training
    Linear (or a train-mode Dropout after an eval Linear, as MC dropout does) would change the output."""
    original = nn.Sequential(nn.Linear(11, 64), nn.ReLU(), nn.Dropout(0.5))
    original[0].train(linear_training)
    original[2].train(not linear_training)
    model = alexnet_kernels.optimize(original, inplace=False)
    assert [type(m) for m in model] == [LinearReLUDropout, nn.Identity, Dropout]
    assert model[0].p == 0.0 and model[2].training == (not linear_training)
    x = make_input((8, 11), scale=1.0, seed=2)
    y, h = model(x), torch.relu(original[0](x))
    if linear_training:   # dropout frozen: relu(linear(x)), as the original gives
        assert torch.allclose(y, original(x), rtol=1e-5, atol=1e-6)
    else:                 # dropout on after an eval Linear: each output dropped or doubled, as the original's
        kept = y != 0
        assert torch.allclose(y[kept], 2 * h[kept], rtol=1e-5, atol=1e-6)
        assert 0.3 < 1 - kept[h > 0].float().mean().item() < 0.7


def _scriptable_cases():
    from alexnet_kernels.fused import ReLULRNMaxPool2d
    x = torch.randn(2, 8, 11, 11)
    return [(LocalResponseNorm(5, 1e-2, 0.75, 2.0), nn.LocalResponseNorm(5, 1e-2, 0.75, 2.0), x),
            (MaxPool2d(3, 2), nn.MaxPool2d(3, 2), x),
            (ReLULRNMaxPool2d(5, 1e-2, 0.75, 2.0, 3, 2),
             nn.Sequential(nn.ReLU(), nn.LocalResponseNorm(5, 1e-2, 0.75, 2.0), nn.MaxPool2d(3, 2)), x),
            (Dropout(0.5).eval(), nn.Dropout(0.5).eval(), x),
            (Conv2dReLU(8, 4, 3), nn.Sequential(nn.Conv2d(8, 4, 3), nn.ReLU()), x),
            (LinearReLUDropout(11, 5, p=0.0), nn.Sequential(nn.Linear(11, 5), nn.ReLU()), x)]


def test_torchscript_is_refused_by_name_and_trace_works():
    """torch.jit.script of our modules (alone or inside a model) raises naming the module and the
    alternatives (it failed on TorchScript's view of our keyword-only arguments, or for Conv2dReLU on a
    re-typed variable); torch.jit.trace gives torch's modules' values."""
    for ours, theirs, x in _scriptable_cases():
        if isinstance(theirs, nn.Sequential) and hasattr(ours, "weight"):
            theirs[0].load_state_dict(ours.state_dict())
        torch.jit.script(theirs)  # torch's own modules script
        name = type(ours).__name__
        for model in (ours, nn.Sequential(nn.Identity(), ours)):
            with pytest.raises(RuntimeError, match=r"%s \(alexnet_kernels\) does not support torch\.jit\.script.*"
                                                   r"torch\.jit\.trace" % name):
                torch.jit.script(model)
        traced = torch.jit.trace(ours, (x,), check_trace=False)
        assert torch.allclose(traced(x), theirs(x), rtol=1e-5, atol=1e-6), name


def test_torch_export_of_our_modules():
    """torch.export.export of a model of our modules (docs/alexnet.md): one graph of our custom ops, the eager
    values."""
    from alexnet_kernels.fused import ReLULRNMaxPool2d
    torch.manual_seed(0)
    model = nn.Sequential(Conv2dReLU(3, 8, 3, padding=1), ReLULRNMaxPool2d(5, 1e-2, 0.75, 2.0, 3, 2),
                          LocalResponseNorm(3, 1e-2, 0.75, 1.0), MaxPool2d(3, 2), nn.Flatten(),
                          LinearReLUDropout(8 * 3 * 3, 10, p=0.5), Dropout(0.5)).eval()
    x = torch.randn(2, 3, 17, 17)
    exported = torch.export.export(model, (x,))
    ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    for op in ("conv2d_relu_forward", "relu_lrn_max_pool2d_forward", "lrn_forward", "max_pool2d_forward",
               "bias_relu_dropout_forward"):
        assert "alexnet_kernels.%s.default" % op in ops, (op, ops)
    assert torch.equal(exported.module()(x), model(x))
