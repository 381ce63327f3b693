"""The two-tower AlexNet (alexnet.AlexNet): shapes, state_dicts, the four cross-talk points, ours vs torch."""
import copy

import pytest
import torch
import torch.nn.functional as F

from alexnet import AlexNet
from alexnet.model import Tower, feature_layout_choices, spread_init_
from alexnet_kernels.conv import Conv2dReLU
from alexnet_kernels.dropout import LinearReLUDropout
from alexnet_kernels.fused import ReLULRNMaxPool2d
from common import make_input, rel_err

N_GPUS = torch.cuda.device_count()
PARAMETER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


@pytest.fixture(scope="module")
def pair():
    """(ours, ref): kernels="ours" and kernels="torch" with the same parameters, dropout off (p=0)."""
    torch.manual_seed(0)
    ours = AlexNet(dropout=0.0)
    spread_init_(ours)
    ref = AlexNet(kernels="torch", dropout=0.0)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.fixture(scope="module")
def image():
    return make_input((2, 3, 227, 227), scale=1.0, seed=1)


def test_parameter_count_and_layer_shapes(pair):
    for net in pair:
        assert sum(p.numel() for p in net.parameters()) == 60_965_224
        a, b = net.tower_a, net.tower_b
        for tower in (a, b):
            assert tower.conv1.weight.shape == (48, 3, 11, 11)
            assert tower.conv2.weight.shape == (128, 48, 5, 5)
            assert tower.conv3.weight.shape == (192, 256, 3, 3)   # reads both towers
            assert tower.conv4.weight.shape == (192, 192, 3, 3)
            assert tower.conv5.weight.shape == (128, 192, 3, 3)
            assert tower.fc6.weight.shape == (2048, 9216)
            assert tower.fc7.weight.shape == (2048, 4096)
        assert a.fc8.weight.shape == b.fc8.weight.shape == (500, 4096)


def test_module_types_per_kernel_set(pair):
    ours, ref = pair
    t = ours.tower_a
    assert isinstance(t.conv1, Conv2dReLU) and isinstance(t.relu_lrn_pool1, ReLULRNMaxPool2d)
    assert isinstance(t.fc6, LinearReLUDropout) and isinstance(t.relu3, torch.nn.Identity)
    assert (t.relu_lrn_pool1.size, t.relu_lrn_pool1.alpha, t.relu_lrn_pool1.beta, t.relu_lrn_pool1.k) == \
        (5, 1e-4, 0.75, 2.0)
    r = ref.tower_b
    assert type(r.conv1) is torch.nn.Conv2d and type(r.fc6) is torch.nn.Linear
    lrn = r.relu_lrn_pool1[1]
    assert type(lrn) is torch.nn.LocalResponseNorm and (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)


def test_odd_class_count_splits_fc8():
    net = AlexNet(num_classes=11, kernels="torch").eval()
    assert net.tower_a.fc8.out_features == 6 and net.tower_b.fc8.out_features == 5
    assert net(make_input((1, 3, 227, 227), seed=2)).shape == (1, 11)


def test_state_dict_keys_identical_and_loadable_both_ways(pair):
    ours, ref = pair
    assert list(ours.state_dict()) == list(ref.state_dict())
    torch.manual_seed(5)
    fresh_ref = AlexNet(kernels="torch")
    ours_copy = copy.deepcopy(ours)
    ours_copy.load_state_dict(fresh_ref.state_dict())
    for k, v in fresh_ref.state_dict().items():
        assert torch.equal(ours_copy.state_dict()[k], v)
    fresh_ref.load_state_dict(ours.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(fresh_ref.state_dict()[k], v)


def test_same_seed_gives_same_parameters_in_both_kernel_sets():
    torch.manual_seed(3)
    ours = AlexNet()
    torch.manual_seed(3)
    ref = AlexNet(kernels="torch")
    for (k, v), w in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(v, w), k


def test_paper_initialisation():
    torch.manual_seed(4)
    net = AlexNet()
    for tower in (net.tower_a, net.tower_b):
        for name in PARAMETER_LAYERS:
            layer = getattr(tower, name)
            w = layer.weight.detach()
            assert abs(w.std().item() - 0.01) < 0.0005, name   # >= 17k samples per tensor
            assert abs(w.mean().item()) < 0.0005, name
            expected = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
            assert torch.all(layer.bias == expected), name


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_ours_matches_torch_forward_and_backward(pair, image, mode):
    """dropout=0 in both nets, so train mode compares the whole training-mode graph without masks."""
    ours, ref = pair
    for net in pair:
        net.train(mode == "train")
        net.zero_grad(set_to_none=True)
    weights = make_input((2, 1000), seed=3)
    x_ours, x_ref = image.clone().requires_grad_(), image.clone().requires_grad_()
    y_ours, y_ref = ours(x_ours), ref(x_ref)
    assert y_ours.shape == (2, 1000)
    assert rel_err(y_ours, y_ref) < 1e-5
    (y_ours * weights).sum().backward()
    (y_ref * weights).sum().backward()
    assert rel_err(x_ours.grad, x_ref.grad) < 1e-4
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert rel_err(p.grad, q.grad) < 1e-4, name
    for net in pair:
        net.zero_grad(set_to_none=True)
        net.eval()


def test_dropout_in_train_mode_only(pair):
    net = copy.deepcopy(pair[0]).train()
    for tower in (net.tower_a, net.tower_b):
        tower.fc6.p = tower.fc7.p = 0.5
    x = make_input((1, 3, 227, 227), scale=1.0, seed=4)
    fc6_out = []
    net.tower_a.fc6.register_forward_hook(lambda m, i, o: fc6_out.append(o.detach()))
    with torch.no_grad():
        torch.manual_seed(0)
        y1 = net(x)
        y2 = net(x)
        torch.manual_seed(0)
        y3 = net(x)
        net.eval()
        e1, e2 = net(x), net(x)
    assert not torch.equal(y1, y2) and torch.equal(y1, y3) and torch.equal(e1, e2)
    zero_fraction = (fc6_out[0] == 0).float().mean().item()
    assert 0.45 < zero_fraction < 0.8  # half dropped, plus the units the ReLU zeroes


def test_224_input_is_padded_right_and_bottom(pair):
    ours = pair[0].eval()
    x = make_input((1, 3, 224, 224), scale=1.0, seed=5)
    padded = F.pad(x, (0, 3, 0, 3))
    assert padded.shape == (1, 3, 227, 227)
    with torch.no_grad():  # the padding is AlexNet.forward's, the same for both kernel sets
        assert torch.equal(ours(x), ours(padded))


@pytest.mark.parametrize("shape", [(1, 3, 225, 225), (1, 3, 227, 224), (1, 4, 227, 227), (3, 227, 227)])
def test_bad_input_size_is_a_clear_error(pair, shape):
    with pytest.raises(ValueError, match="227"):
        pair[0](torch.zeros(shape))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="kernels"):
        AlexNet(kernels="cudnn")
    with pytest.raises(ValueError, match="devices"):
        AlexNet(devices="cpu")
    with pytest.raises(ValueError, match="num_classes"):
        AlexNet(num_classes=1)


# --- the four cross-talk points ---------------------------------------------------------------------------

def trace(net, x):
    """{(tower, module name): (input, output)} of every direct child of both towers, for one eval forward."""
    records, handles = {}, []
    for tname in ("tower_a", "tower_b"):
        for name, module in getattr(net, tname).named_children():
            def hook(m, inputs, output, key=(tname, name)):
                records[key] = (inputs[0].detach().clone(), output.detach().clone())
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            records["logits"] = (None, net(x))
    finally:
        for h in handles:
            h.remove()
    return records


def trace_with_negated_weight(net, x, layer):
    """trace() with layer.weight negated (restored after: negation is exact, so no copy of the net)."""
    with torch.no_grad():
        layer.weight.neg_()
    try:
        return trace(net, x)
    finally:
        with torch.no_grad():
            layer.weight.neg_()


@pytest.fixture(scope="module")
def traced(pair):
    ours = pair[0].eval()
    x = make_input((1, 3, 227, 227), scale=1.0, seed=6)
    return ours, x, trace(ours, x)


def test_exchange_points_concatenate_tower_a_then_tower_b(traced):
    _, _, rec = traced
    for t in ("tower_a", "tower_b"):
        assert torch.equal(rec[t, "conv3"][0], torch.cat([rec["tower_a", "relu_lrn_pool2"][1],
                                                          rec["tower_b", "relu_lrn_pool2"][1]], 1))
        assert torch.equal(rec[t, "fc6"][0], torch.cat([rec["tower_a", "relu_pool5"][1].flatten(1),
                                                        rec["tower_b", "relu_pool5"][1].flatten(1)], 1))
        assert torch.equal(rec[t, "fc7"][0], torch.cat([rec["tower_a", "relu_dropout6"][1],
                                                        rec["tower_b", "relu_dropout6"][1]], 1))
        assert torch.equal(rec[t, "fc8"][0], torch.cat([rec["tower_a", "relu_dropout7"][1],
                                                        rec["tower_b", "relu_dropout7"][1]], 1))
    assert torch.equal(rec["logits"][1], torch.cat([rec["tower_a", "fc8"][1], rec["tower_b", "fc8"][1]], 1))


# (layer perturbed in the *other* tower, this tower's layers whose outputs must not change, the next
# exchange input in this tower: its own half unchanged, the other tower's half changed)
CROSS_TALK_CASES = [
    ("conv1", ["conv1", "relu_lrn_pool1", "conv2", "relu_lrn_pool2"], "conv3"),
    ("conv2", ["conv2", "relu_lrn_pool2"], "conv3"),
    ("conv3", ["conv3", "conv4", "conv5", "relu_pool5"], "fc6"),
    ("conv4", ["conv3", "conv4", "conv5", "relu_pool5"], "fc6"),
    ("conv5", ["conv4", "conv5", "relu_pool5"], "fc6"),
    ("fc6", ["fc6", "relu_dropout6"], "fc7"),
    ("fc7", ["fc7", "relu_dropout7"], "fc8"),
]


@pytest.mark.parametrize("perturbed_tower", ["tower_b", "tower_a"])
@pytest.mark.parametrize("layer, unchanged, exchange", CROSS_TALK_CASES, ids=[c[0] for c in CROSS_TALK_CASES])
def test_towers_talk_only_at_the_four_exchange_points(traced, perturbed_tower, layer, unchanged, exchange):
    net, x, before = traced
    other = "tower_a" if perturbed_tower == "tower_b" else "tower_b"
    after = trace_with_negated_weight(net, x, getattr(getattr(net, perturbed_tower), layer))
    for name in unchanged:
        assert torch.equal(after[other, name][1], before[other, name][1]), name
    half = before[other, exchange][0].shape[1] // 2
    own, foreign = (slice(0, half), slice(half, None)) if other == "tower_a" else (slice(half, None),
                                                                                   slice(0, half))
    assert torch.equal(after[other, exchange][0][:, own], before[other, exchange][0][:, own])
    assert not torch.equal(after[other, exchange][0][:, foreign], before[other, exchange][0][:, foreign])


def test_fc8_halves_are_the_two_towers_logits(traced):
    net, x, before = traced
    logits, old = trace_with_negated_weight(net, x, net.tower_b.fc8)["logits"][1], before["logits"][1]
    assert torch.equal(logits[:, :500], old[:, :500]) and not torch.equal(logits[:, 500:], old[:, 500:])


# --- devices, layouts, autocast -----------------------------------------------------------------------------

def check_placement_and_grads(net, x, devices, reference):
    for tower, device in zip((net.tower_a, net.tower_b), devices):
        assert all(p.device == torch.device(device) for p in tower.parameters())
    y = net(x)
    assert y.device == torch.device(devices[0])
    assert rel_err(y, reference) < 1e-4
    y.float().sum().backward()
    for tower, device in zip((net.tower_a, net.tower_b), devices):
        assert all(p.grad is not None and p.grad.device == torch.device(device) for p in tower.parameters())


def tower_devices_params():
    cases = [pytest.param(("cpu", "cpu"), id="cpu-cpu")]
    one_gpu = pytest.mark.skipif(N_GPUS < 1, reason="needs a CUDA GPU")
    two_gpus = pytest.mark.skipif(N_GPUS < 2, reason="needs 2 CUDA GPUs, found %d" % N_GPUS)
    cases.append(pytest.param(("cuda:0", "cuda:0"), id="cuda0-cuda0", marks=one_gpu))
    cases.append(pytest.param(("cpu", "cuda:0"), id="cpu-cuda0", marks=one_gpu))
    cases.append(pytest.param(("cuda:0", "cuda:1"), id="cuda0-cuda1", marks=two_gpus))
    return cases


@pytest.mark.parametrize("devices", tower_devices_params())
def test_towers_on_their_devices(pair, image, devices):
    ours, ref = pair
    net = AlexNet(devices=devices, dropout=0.0).eval()
    net.load_state_dict(ours.state_dict())  # load_state_dict copies into each tower's device
    x = image[:1]
    with torch.no_grad():
        reference = ref.eval()(x)
    check_placement_and_grads(net, x, devices, reference)


def test_devices_none_moves_like_any_module(pair):
    net = copy.deepcopy(pair[0])
    assert net.devices is None
    net.to("meta")
    assert all(p.device.type == "meta" for p in net.parameters())


@pytest.mark.parametrize("kernels", ["ours", "torch"])
def test_channels_last_input(pair, image, kernels):
    net = pair[0] if kernels == "ours" else pair[1]
    net.eval()
    with torch.no_grad():
        y = net(image)
        y_cl = net(image.contiguous(memory_format=torch.channels_last))
    assert rel_err(y_cl, y) < 1e-5


def torch_lrn_takes_cpu_bf16():
    try:
        torch.nn.LocalResponseNorm(5)(torch.ones(1, 2, 2, 2, dtype=torch.bfloat16))
        return True
    except NotImplementedError:
        return False


@pytest.mark.parametrize("kernels", ["ours", "torch"])
def test_autocast_bf16_cpu(pair, image, kernels):
    if kernels == "torch" and not torch_lrn_takes_cpu_bf16():
        pytest.skip("torch's LocalResponseNorm has no CPU bfloat16 kernel (avg_pool3d); kernels='torch' "
                    "autocasts on CUDA only")
    net = copy.deepcopy(pair[0] if kernels == "ours" else pair[1]).train()
    with torch.no_grad():
        reference = net(image)
    x = image.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    assert y.dtype == torch.bfloat16
    assert rel_err(y, reference) < 5e-2
    y.float().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_tower_is_exported():
    import alexnet
    assert alexnet.AlexNet is AlexNet and alexnet.Tower is Tower


@pytest.mark.skipif(N_GPUS < 1, reason="needs a CUDA GPU")
@pytest.mark.parametrize("kernels", ["ours", "torch"])
def test_autocast_bf16_cuda(pair, image, kernels):
    net = copy.deepcopy(pair[0] if kernels == "ours" else pair[1]).eval()
    with torch.no_grad():
        reference = net(image)
    net.cuda()
    x = image.cuda().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = net(x)
    assert y.dtype == torch.bfloat16 and rel_err(y, reference) < 5e-2
    y.float().sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_backend_reaches_our_modules():
    tower = Tower(5, kernels="ours", backend="torch")
    ours = [m for m in tower.modules() if hasattr(m, "backend")]
    assert len(ours) == 10 and all(m.backend == "torch" for m in ours)  # 5 convs, 2 fused, pool, 2 fc


# --- one device: one graph without concatenations -----------------------------------------------------------

@pytest.mark.parametrize("kernels,layout", [("ours", "nchw"), ("ours", "channels_last"), ("torch", None)])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_one_device_graph_equals_the_tower_path(pair, image, kernels, layout, mode, monkeypatch):
    """The grouped one-device graph against the explicit towers: logits, the input's and every parameter's
    gradient (train mode: dropout=0 here, so the whole training graph; eval under no_grad: the fc addmm path).
    kernels="ours" on the CPU runs conv1-pool5 on NCHW or channels_last activations (measured per case): each
    layout forced in turn."""
    net = pair[0] if kernels == "ours" else pair[1]
    net.train(mode == "train")
    if layout is not None:
        monkeypatch.setattr(net, "_feature_layout", lambda x: layout)
    assert net._runs_as_one_graph()
    try:
        weights = make_input((2, 1000), seed=30)
        results = []
        for forward in (net.forward_one_device, net.forward_towers):
            net.zero_grad(set_to_none=True)
            x = image.clone().requires_grad_()
            y = forward(x)
            (y * weights).sum().backward()
            with torch.no_grad():
                y_inference = forward(image)
            results.append((y, y_inference, x.grad, [p.grad for p in net.parameters()]))
        (y1, yi1, dx1, g1), (y2, yi2, dx2, g2) = results
        assert rel_err(y1, y2) < 1e-5 and rel_err(yi1, yi2) < 1e-5 and rel_err(yi1, y2) < 1e-5
        assert rel_err(dx1, dx2) < 1e-5
        for (name, _), a, b in zip(net.named_parameters(), g1, g2):
            assert rel_err(a, b) < 1e-5, name
    finally:
        net.zero_grad(set_to_none=True)
        net.eval()


class CatRecorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Records (dim, input shapes) of every aten.cat the forward runs."""

    def __init__(self):
        super().__init__()
        self.cats = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket is torch.ops.aten.cat:
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            self.cats.append((dim, [tuple(t.shape) for t in args[0]]))
        return func(*args, **kwargs)


@pytest.mark.parametrize("kernels,layout", [("ours", "nchw"), ("ours", "channels_last"), ("torch", None)])
@pytest.mark.parametrize("grad", [False, True])
def test_one_device_graph_concatenates_no_activations(pair, kernels, layout, grad, monkeypatch):
    """The only concatenations left are of the (small) conv weights and biases along dim 0; the tower path
    (the reference) concatenates activations at the exchange points.  With autograd the fc layers keep each
    tower's module (the dropout masks) and join their (N, 2048) outputs.  kernels="ours": each feature layout
    forced in turn (the measured choice differs between machines and torch versions)."""
    net = (pair[0] if kernels == "ours" else pair[1]).eval()
    if layout is not None:
        monkeypatch.setattr(net, "_feature_layout", lambda x: layout)
    x = make_input((3, 3, 227, 227), scale=1.0, seed=31)  # batch 3: no parameter has 3 rows
    with torch.no_grad():
        net(x)  # kernels="ours": each conv layer's own layout is measured on the first call
    channels_last = layout == "channels_last"
    with torch.set_grad_enabled(grad), CatRecorder() as rec:
        net(x)
    activation_cats = [c for c in rec.cats if any(shape[0] == 3 for shape in c[1])]
    # channels_last: the towers' pool2 outputs, (3, 128, 13, 13) each, joined once
    pool2 = [(1, [(3, 128, 13, 13)] * 2)] if channels_last else []
    if grad:  # fc6, fc7 and fc8's outputs, (3, 2048) or (3, 500) each
        assert activation_cats == pool2 + [(1, [(3, 2048)] * 2)] * 2 + [(1, [(3, 500)] * 2)]
    else:
        assert activation_cats == pool2
    parameter_cats = [c for c in rec.cats if c not in activation_cats]
    if grad:  # 5 weights, 5 biases: autograd reaches each tower's parameters through the concatenation
        # (channels_last: conv1 and conv2 run tower by tower on each tower's own parameters: 3 and 3)
        assert len(parameter_cats) == (6 if channels_last else 10) and all(dim == 0 for dim, _ in parameter_cats)
    else:     # the packed weights are read as one view
        assert parameter_cats == []
    with torch.no_grad(), CatRecorder() as towers:
        net.forward_towers(x)
    assert len([c for c in towers.cats if any(shape[0] == 3 for shape in c[1])]) == 5


def test_feature_layout_is_measured_once_per_case(pair):
    net = pair[0].eval()
    x = make_input((1, 3, 227, 227), scale=1.0, seed=34)
    with torch.no_grad():
        y = net(x)
        key = ((1, 3, 227, 227), torch.float32, True, "cpu", torch.get_num_threads())
        chosen, times = feature_layout_choices()[key]
        assert set(times) == {"nchw", "channels_last"} and times[chosen] == min(times.values())
        assert torch.equal(net(x), y) and feature_layout_choices()[key] == (chosen, times)


def test_one_device_graph_only_where_its_rule_holds(pair):
    net = copy.deepcopy(pair[0])
    assert net._runs_as_one_graph()
    handle = net.tower_b.conv4.register_forward_hook(lambda *a: None)
    assert not net._runs_as_one_graph()  # a hook on a tower's module: the towers run, so it is called
    handle.remove()
    net.tower_b.relu_pool5 = torch.nn.MaxPool2d(3, 2)  # the towers differ
    assert not net._runs_as_one_graph()


def test_conv_weights_packed_as_one_tensor_per_layer(pair):
    """Each conv layer's two weights (and biases) are adjacent views of one tensor, also after .to(); the
    values and state_dict are those of separate parameters."""
    from alexnet.model import _adjacent
    net = copy.deepcopy(pair[0])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for layout in (torch.contiguous_format, torch.channels_last, torch.contiguous_format):
        net.to(memory_format=layout)
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
            la, lb = getattr(net.tower_a, name), getattr(net.tower_b, name)
            assert la.weight.is_contiguous(memory_format=layout)
            with torch.no_grad():
                both = _adjacent(la.weight, lb.weight)
                assert both is not None and torch.equal(both, torch.cat([la.weight, lb.weight]))
                assert torch.equal(_adjacent(la.bias, lb.bias), torch.cat([la.bias, lb.bias]))
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    fresh = AlexNet(dropout=0.0)
    fresh.load_state_dict(net.state_dict())
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())


@pytest.mark.parametrize("kernels", ["ours", "torch"])
@pytest.mark.parametrize("grad", [False, True])
def test_one_device_graph_traces_without_graph_breaks(pair, kernels, grad):
    """torch.compile sees the whole one-device forward as one graph (no storage-pointer checks traced)."""
    net = (pair[0] if kernels == "ours" else pair[1]).eval()
    torch._dynamo.reset()
    with torch.set_grad_enabled(grad):
        explained = torch._dynamo.explain(net)(make_input((1, 3, 227, 227), scale=1.0, seed=32))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
