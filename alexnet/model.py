"""The 2012 two-tower AlexNet (Krizhevsky, Sutskever, Hinton), built from alexnet_kernels' ops or from torch's.

    from alexnet import AlexNet
    net = AlexNet(num_classes=1000)                                 # both towers on one device (cpu)
    net = AlexNet(num_classes=1000, devices=("cuda:0", "cuda:1"))   # tower A on cuda:0, tower B on cuda:1
    ref = AlexNet(num_classes=1000, kernels="torch")                # stock torch ops, the same state_dict keys

Each tower (net.tower_a, net.tower_b, both `Tower`) holds half of every layer: 48/128/192/192/128 conv kernels
and 2048/2048 FC units; fc8 is split into (num_classes + 1) // 2 classes on tower A and num_classes // 2 on
tower B.  The towers exchange activations at exactly four points -- pool2 -> conv3, pool5 -> fc6, fc6 -> fc7
and fc7 -> fc8 -- where each tower reads the concatenation [tower A's channels, tower B's channels]; every
other layer reads its own tower only.  60,965,224 parameters for 1000 classes.

Both towers on one device (devices None or a pair naming one device): the same network runs as one graph
without concatenations (but one, below), each conv layer's two weights (and biases) stored as views of one
NCHW tensor [A; B] (repacked after .to()): conv1 as one 96-filter convolution (both towers read the image),
conv2, conv4 and conv5 as grouped convolutions (groups=2: group g is tower g), conv3 as one 384-filter
convolution (it reads both towers anyway), each tower's ReLU->LRN->pool on its channels through a
(2N, C/2, H, W) view of the NCHW activations, pool5 flattened in place of the pool5 -> fc6 concatenation, and
in inference (no dropout, no autograd) fc6/fc7/fc8 as one addmm per tower written into its half of one
output, then one in-place ReLU (training keeps each tower's fc module: the same dropout masks).  With
kernels="ours" on the CPU, conv1 to pool5 run either as above or on channels_last activations (oneDNN's faster
layout at batch 32), conv1 to pool2 then tower by tower (no per-tower views exist in that layout; the towers'
pool2 outputs concatenated once), whichever was measured faster for the input's case
(feature_layout_choices()).
Outputs agree with the tower path to fp32 rounding; the parameters, state_dict and modules are unchanged.
The tower path runs on two devices, while exporting or tracing (the exported graph keeps both towers), when a
hook is registered on a tower's module (it would not be called otherwise), and when a tower's modules were
replaced by other types or settings.

LRN: size 5, alpha 1e-4, beta 0.75, k 2, in PyTorch's convention (alpha divided by the size), within each
tower's 48 or 128 channels.  The paper's text writes alpha = 1e-4 without dividing by n, which would be
PyTorch's alpha = 5e-4; the released cuda-convnet code divided by n (its 1e-4 is PyTorch's 1e-4), and that is
what is used here (docs/lrn.md compares the libraries' conventions).
"""
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from alexnet_kernels.conv import Conv2dReLU, conv2d_relu
from alexnet_kernels.dropout import LinearReLUDropout
from alexnet_kernels.fused import ReLULRNMaxPool2d
from alexnet_kernels.pool import MaxPool2d

__all__ = ["AlexNet", "Tower", "KERNELS", "INPUT_SIZE", "spread_init_", "feature_layout_choices"]

KERNELS = ("ours", "torch")
INPUT_SIZE = 227                 # 224 is accepted and zero-padded by 3 on the right and bottom
LRN_ARGS = (5, 1e-4, 0.75, 2.0)  # size, alpha (PyTorch convention), beta, k
POOL_ARGS = (3, 2)               # overlapping max-pool: 3x3 windows, stride 2

# Per tower: (in_channels, out_channels, kernel_size, stride, padding); conv3 reads both towers.
CONV_SHAPES = {"conv1": (3, 48, 11, 4, 0), "conv2": (48, 128, 5, 1, 2), "conv3": (256, 192, 3, 1, 1),
               "conv4": (192, 192, 3, 1, 1), "conv5": (192, 128, 3, 1, 1)}
FC6_IN, FC_UNITS = 2 * 128 * 6 * 6, 2048
# The paper's init: biases 1 in these layers (ReLUs start in their positive region), 0 elsewhere.
UNIT_BIAS_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")


class Tower(nn.Module):
    """One GPU's half of AlexNet.

    Parameters (identical names in both kernel sets, so state_dicts load either way): conv1..conv5, fc6, fc7,
    fc8.  Parameter-free stages named after what runs there in the reference formulation:
    relu_lrn_pool1, relu_lrn_pool2, relu3, relu4, relu_pool5, relu_dropout6, relu_dropout7.  With
    kernels="ours" the ReLU (and dropout) is fused into the layer before it -- Conv2dReLU,
    LinearReLUDropout -- so relu3/relu4/relu_dropout6/relu_dropout7 are nn.Identity, relu_pool5 is the max-pool
    alone, and relu_lrn_pool1/2 are the fused ReLULRNMaxPool2d (its ReLU is a no-op on ReLU'd input).
    """

    def __init__(self, fc8_classes, kernels="ours", dropout=0.5, backend=None):
        super().__init__()
        ours = kernels == "ours"

        def conv(name):
            cin, cout, ksize, stride, pad = CONV_SHAPES[name]
            if ours:
                return Conv2dReLU(cin, cout, ksize, stride, pad, backend=backend)
            return nn.Conv2d(cin, cout, ksize, stride, pad)

        def relu_lrn_pool():
            if ours:
                return ReLULRNMaxPool2d(*LRN_ARGS, *POOL_ARGS, backend=backend)
            return nn.Sequential(nn.ReLU(), nn.LocalResponseNorm(*LRN_ARGS), nn.MaxPool2d(*POOL_ARGS))

        def relu():
            return nn.Identity() if ours else nn.ReLU()

        def fc(in_features):
            if ours:
                return LinearReLUDropout(in_features, FC_UNITS, p=dropout, backend=backend)
            return nn.Linear(in_features, FC_UNITS)

        def relu_dropout():
            return nn.Identity() if ours else nn.Sequential(nn.ReLU(), nn.Dropout(dropout))

        # Registered in execution order (the repr and state_dict list layers as they run).
        self.conv1, self.relu_lrn_pool1 = conv("conv1"), relu_lrn_pool()
        self.conv2, self.relu_lrn_pool2 = conv("conv2"), relu_lrn_pool()
        self.conv3, self.relu3 = conv("conv3"), relu()
        self.conv4, self.relu4 = conv("conv4"), relu()
        self.conv5 = conv("conv5")
        self.relu_pool5 = (MaxPool2d(*POOL_ARGS, backend=backend) if ours
                           else nn.Sequential(nn.ReLU(), nn.MaxPool2d(*POOL_ARGS)))
        self.fc6, self.relu_dropout6 = fc(FC6_IN), relu_dropout()
        self.fc7, self.relu_dropout7 = fc(2 * FC_UNITS), relu_dropout()
        self.fc8 = nn.Linear(2 * FC_UNITS, fc8_classes)

    @property
    def device(self):
        return self.conv1.weight.device

    # The stages between exchange points; AlexNet.forward runs each for both towers before exchanging.
    def stage_conv12(self, image):
        return self.relu_lrn_pool2(self.conv2(self.relu_lrn_pool1(self.conv1(image))))

    def stage_conv345(self, both_pool2):
        x = self.relu4(self.conv4(self.relu3(self.conv3(both_pool2))))
        return torch.flatten(self.relu_pool5(self.conv5(x)), 1)

    def stage_fc6(self, both_pool5):
        return self.relu_dropout6(self.fc6(both_pool5))

    def stage_fc7(self, both_fc6):
        return self.relu_dropout7(self.fc7(both_fc6))

    def stage_fc8(self, both_fc7):
        return self.fc8(both_fc7)


def _exchange(a, b):
    """Each tower's input at a cross-talk point: [A's features, B's features] on that tower's device."""
    if a.device == b.device:  # one tensor serves both towers
        both = torch.cat([a, b], 1)
        return both, both
    # non_blocking: the copy is queued on the stream like a kernel, so the other tower's work is not held up.
    return (torch.cat([a, b.to(a.device, non_blocking=True)], 1),
            torch.cat([a.to(b.device, non_blocking=True), b], 1))


class AlexNet(nn.Module):
    """The two-tower AlexNet of the 2012 paper (see the module docstring for the layer table).

    num_classes: fc8's outputs (tower A computes the first (num_classes + 1) // 2 logits, tower B the rest).
    devices: None (both towers wherever the module is moved, like any module) or a pair (device_a, device_b):
        tower A's parameters are placed on device_a and tower B's on device_b at construction; the logits
        come back on device_a.  The pair may name the same device.
    kernels: "ours" (alexnet_kernels' fused ops) or "torch" (nn.Conv2d, nn.ReLU, nn.LocalResponseNorm,
        nn.MaxPool2d, nn.Linear, nn.Dropout); both give the same parameters and state_dict keys.
    dropout: fc6 and fc7's dropout probability.
    backend: passed to alexnet_kernels' modules (None: the package default); ignored by kernels="torch".

    Input: (N, 3, 227, 227), or (N, 3, 224, 224), which is zero-padded by 3 on the right and bottom as
    cuda-convnet did; it is copied to each tower's device.  Any memory format; autocast applies as usual.
    Parameters are initialised as in the paper (reset_parameters) from torch's global RNG, on the cpu, before
    the towers are placed (so a seed gives the same network on any devices).
    """

    def __init__(self, num_classes=1000, *, devices=None, kernels="ours", dropout=0.5, backend=None):
        super().__init__()
        if kernels not in KERNELS:
            raise ValueError("AlexNet: kernels must be one of %s, got %r"
                             % (", ".join(map(repr, KERNELS)), kernels))
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError("AlexNet: num_classes must be an int >= 2 (fc8 is split across both towers), "
                             "got %r" % (num_classes,))
        if devices is not None:
            if isinstance(devices, (str, torch.device)) or len(devices) != 2:
                raise ValueError("AlexNet: devices must be None or a pair (device_a, device_b), got %r"
                                 % (devices,))
            devices = tuple(torch.device(d) for d in devices)
        self.num_classes, self.kernels, self.dropout, self.devices = num_classes, kernels, dropout, devices
        self.tower_a = Tower((num_classes + 1) // 2, kernels, dropout, backend)
        self.tower_b = Tower(num_classes // 2, kernels, dropout, backend)
        self.reset_parameters()
        if devices is not None:
            self.tower_a.to(devices[0])
            self.tower_b.to(devices[1])
        with torch.no_grad():  # NCHW: the layout whose per-tower channels are views (forward_one_device)
            for name in CONV_SHAPES:
                for tower in (self.tower_a, self.tower_b):
                    layer = getattr(tower, name)
                    layer.weight.data = layer.weight.data.contiguous()
        self._pack_towers()

    def _apply(self, fn, *args, **kwargs):
        # .to(), .float(), .to(memory_format=...) replace each parameter's tensor: pack the towers again.
        module = super()._apply(fn, *args, **kwargs)
        self._pack_towers()
        return module

    def _pack_towers(self):
        """On one device, make each conv layer's two weights (and two biases) views of one tensor, tower A's
        rows then tower B's, in the layout they have: the one-device graph then reads [A; B] without a copy
        (_adjacent).  The Parameter objects, their values and the state_dict are unchanged."""
        a, b = self.tower_a, self.tower_b
        if a.device != b.device or a.device.type == "meta":
            return
        with torch.no_grad():
            for name in CONV_SHAPES:
                for attr in ("weight", "bias"):
                    pa, pb = getattr(getattr(a, name), attr), getattr(getattr(b, name), attr)
                    if (pa is None or pb is None or pa.dtype != pb.dtype or pa.stride() != pb.stride()
                            or _adjacent(pa, pb) is not None):
                        continue
                    both = torch.cat([pa.data, pb.data])  # keeps the inputs' memory format
                    if both.stride() != pa.stride():
                        continue
                    pa.data, pb.data = both[:pa.shape[0]], both[pa.shape[0]:]

    def reset_parameters(self):
        """The paper's init: every weight N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0."""
        with torch.no_grad():
            for tower in (self.tower_a, self.tower_b):
                for name in list(CONV_SHAPES) + ["fc6", "fc7", "fc8"]:
                    layer = getattr(tower, name)
                    _normal_in_logical_order_(layer.weight, 0.0, 0.01)
                    layer.bias.fill_(1.0 if name in UNIT_BIAS_LAYERS else 0.0)

    def forward(self, image):
        image = _check_image(image)
        if self._runs_as_one_graph():
            return self.forward_one_device(image)
        return self.forward_towers(image)

    def forward_towers(self, image):
        """The two-tower graph of the paper: each tower's modules, the four exchange points concatenating
        [A, B] on each tower's device."""
        image = _check_image(image)
        a, b = self.tower_a, self.tower_b
        # Each stage is issued for tower A, then tower B, before either waits on the other: on two GPUs the
        # launches are asynchronous, so the towers compute concurrently between exchange points.
        pool2_a = a.stage_conv12(image.to(a.device, non_blocking=True))
        pool2_b = b.stage_conv12(image.to(b.device, non_blocking=True))
        in_a, in_b = _exchange(pool2_a, pool2_b)
        in_a, in_b = _exchange(a.stage_conv345(in_a), b.stage_conv345(in_b))
        in_a, in_b = _exchange(a.stage_fc6(in_a), b.stage_fc6(in_b))
        in_a, in_b = _exchange(a.stage_fc7(in_a), b.stage_fc7(in_b))
        logits_a, logits_b = a.stage_fc8(in_a), b.stage_fc8(in_b)
        return torch.cat([logits_a, logits_b.to(logits_a.device, non_blocking=True)], 1)

    def forward_one_device(self, image):
        """Both towers on one device as one graph without concatenations (the module docstring); the towers'
        modules must be as AlexNet builds them (see _runs_as_one_graph)."""
        image = _check_image(image)
        a, b = self.tower_a, self.tower_b
        x = image.to(a.device)
        # kernels="ours" on the CPU: the conv layers on NCHW or channels_last activations, whichever was measured
        # faster for the case (see feature_layout_choices); else NCHW.
        layout = self._feature_layout(x) if self.kernels == "ours" and x.device.type == "cpu" else "nchw"
        x = _FEATURES[layout](self.kernels, a, b, x)
        x = torch.flatten(x.contiguous(), 1)  # [A's 128 channels, B's 128] in NCHW order: the exchange input
        if self._fc_as_one_gemm(x):
            x = _linear_into_halves(x, a.fc6, b.fc6, relu=True)
            x = _linear_into_halves(x, a.fc7, b.fc7, relu=True)
            return _linear_into_halves(x, a.fc8, b.fc8, relu=False)
        x = torch.cat([a.stage_fc6(x), b.stage_fc6(x)], 1)
        x = torch.cat([a.stage_fc7(x), b.stage_fc7(x)], 1)
        return torch.cat([a.stage_fc8(x), b.stage_fc8(x)], 1)

    def _feature_layout(self, x):
        """"nchw" or "channels_last": the conv1-to-pool5 graph measured faster for x's case, once per process
        (both interleaved over rounds without autograd, each one's fastest round kept: about 0.3 s at most, or
        3 rounds).  Batch 32: channels_last (oneDNN's faster convolutions there, no conversions); batch 1:
        NCHW (fewer, larger calls)."""
        if torch.compiler.is_compiling():  # nothing to time while tracing
            return "nchw"
        key = (tuple(x.shape), x.dtype, x.is_contiguous(), str(x.device), torch.get_num_threads())
        measured = _feature_layouts.get(key)
        if measured is not None:
            return measured[0]
        a, b = self.tower_a, self.tower_b
        best = {}
        with torch.no_grad():
            x = x.detach()
            for fn in _FEATURES.values():  # warm-up: each conv measures its layout, oneDNN builds its primitives
                fn(self.kernels, a, b, x)
            start, rounds = time.perf_counter(), 0
            while rounds < 3 or (rounds < 15 and time.perf_counter() - start < 0.3):
                for name, fn in _FEATURES.items():
                    t0 = time.perf_counter()
                    fn(self.kernels, a, b, x)
                    ms = (time.perf_counter() - t0) * 1e3
                    best[name] = min(ms, best.get(name, ms))
                rounds += 1
        _feature_layouts[key] = (min(best, key=best.get), best)
        return _feature_layouts[key][0]

    @torch.compiler.disable  # module hooks and reprs are checked eagerly (dynamo would break its graph on them)
    def _runs_as_one_graph(self):
        """The rule of the module docstring: one device, not exporting or tracing, no hooks on the towers'
        modules, and both towers' modules of the types and settings AlexNet builds."""
        a, b = self.tower_a, self.tower_b
        if a.device != b.device or torch.compiler.is_exporting() or torch.jit.is_tracing():
            return False
        conv = Conv2dReLU if self.kernels == "ours" else nn.Conv2d
        for name in CONV_SHAPES:
            la, lb = getattr(a, name), getattr(b, name)
            if not (type(la) is conv and type(lb) is conv and _conv_settings(la) == _conv_settings(lb)):
                return False
        for name in ("relu_lrn_pool1", "relu_lrn_pool2", "relu3", "relu4", "relu_pool5"):
            if repr(getattr(a, name)) != repr(getattr(b, name)):
                return False
        for tower in (a, b):
            for m in tower.modules():
                if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
                    return False
        return True

    def _fc_as_one_gemm(self, x):
        """addmm into the halves of one output: without autograd or autocast (out= has neither), with no
        dropout (eval), under no compiler (out= into views breaks its graph), for the fc modules AlexNet
        builds."""
        if torch.is_grad_enabled() and (x.requires_grad or any(
                p.requires_grad for t in (self.tower_a, self.tower_b) for p in t.parameters())):
            return False
        if torch.compiler.is_compiling() or torch.is_autocast_enabled(x.device.type):
            return False
        ours = self.kernels == "ours"
        for tower in (self.tower_a, self.tower_b):
            if ours:
                expected = [(tower.fc6, LinearReLUDropout), (tower.fc7, LinearReLUDropout), (tower.fc8, nn.Linear),
                            (tower.relu_dropout6, nn.Identity), (tower.relu_dropout7, nn.Identity)]
            else:
                expected = [(tower.fc6, nn.Linear), (tower.fc7, nn.Linear), (tower.fc8, nn.Linear)] + [
                    (stage, nn.Sequential) for stage in (tower.relu_dropout6, tower.relu_dropout7)]
                if any([type(m) for m in stage] != [nn.ReLU, nn.Dropout]
                       for stage in (tower.relu_dropout6, tower.relu_dropout7)):
                    return False
            if any(type(m) is not kind for m, kind in expected):
                return False
            if any(m.training for stage in ("fc6", "fc7", "relu_dropout6", "relu_dropout7")
                   for m in getattr(tower, stage).modules()):
                return False
            if any(fc.bias is None or fc.weight.dtype != x.dtype for fc in (tower.fc6, tower.fc7, tower.fc8)):
                return False
        return True

    def extra_repr(self):
        return "num_classes=%d, kernels=%r, dropout=%s, devices=%s" % (
            self.num_classes, self.kernels, self.dropout,
            None if self.devices is None else tuple(str(d) for d in self.devices))


def _features_nchw(kernels, a, b, image):
    """conv1 to pool5 of both towers on NCHW activations: one convolution per layer (grouped where each tower
    reads its own half), each tower's ReLU->LRN->pool through the (2N, C/2, H, W) view."""
    x = image.contiguous()
    x = _per_tower(a.relu_lrn_pool1, _grouped_conv(kernels, a.conv1, b.conv1, x, 1))
    x = _per_tower(a.relu_lrn_pool2, _grouped_conv(kernels, a.conv2, b.conv2, x, 2))
    return _conv345(kernels, a, b, x)


def _features_channels_last(kernels, a, b, image):
    """conv1 to pool5 on channels_last activations: conv1 to pool2 tower by tower (no per-tower view exists
    in that layout), the towers' pool2 outputs concatenated once, then the same graph as NCHW."""
    x = image.contiguous(memory_format=torch.channels_last)
    return _conv345(kernels, a, b, torch.cat([a.stage_conv12(x), b.stage_conv12(x)], 1))


def _conv345(kernels, a, b, x):
    x = a.relu3(_grouped_conv(kernels, a.conv3, b.conv3, x, 1))
    x = a.relu4(_grouped_conv(kernels, a.conv4, b.conv4, x, 2))
    return a.relu_pool5(_grouped_conv(kernels, a.conv5, b.conv5, x, 2))


_FEATURES = {"nchw": _features_nchw, "channels_last": _features_channels_last}
# (image shape, dtype, NCHW-contiguous, device, threads) -> (layout chosen, {layout: best ms})
_feature_layouts = {}


def feature_layout_choices():
    """{case: (layout chosen, {layout: best ms})} of every conv1-to-pool5 layout measured in this process
    (AlexNet(kernels="ours") on the CPU, both towers on one device)."""
    return dict(_feature_layouts)


def _conv_settings(layer):
    return (layer.stride, layer.padding, layer.dilation, layer.padding_mode, getattr(layer, "backend", None),
            getattr(layer, "backward_route", None))


def _grouped_conv(kernels, layer_a, layer_b, x, groups):
    """Both towers' layer as one convolution over NCHW x: output channels [A's, B's]; groups=2 where each
    tower reads its own half of x.  kernels="ours" fuses the ReLU, "torch" leaves it to the tower's next
    module, as the tower path does."""
    weight, bias = _both(layer_a.weight, layer_b.weight), _both(layer_a.bias, layer_b.bias)
    if kernels == "ours":
        return conv2d_relu(x, weight, bias, layer_a.stride, layer_a.padding, layer_a.dilation, groups,
                           backend=layer_a.backend, backward_route=layer_a.backward_route)
    return F.conv2d(x, weight, bias, layer_a.stride, layer_a.padding, layer_a.dilation, groups)


def _both(pa, pb):
    """[pa; pb] along dim 0: a view where AlexNet packed them adjacent and no gradient is needed, else a
    concatenation (the small weights copied; autograd then reaches each tower's parameter through it)."""
    # Under torch.compile the concatenation is the compiler's to plan (storage pointers are not traceable).
    if not (torch.compiler.is_compiling() or (torch.is_grad_enabled() and (pa.requires_grad or pb.requires_grad))):
        both = _adjacent(pa, pb)
        if both is not None:
            return both
    return torch.cat([pa, pb])


def _adjacent(pa, pb):
    """[pa; pb] as a view when pb's elements directly follow pa's in one storage with the same strides and
    dim 0 outermost (NCHW or channels_last weights, 1-D biases), else None."""
    if (pa.device != pb.device or pa.dtype != pb.dtype or pa.stride() != pb.stride()
            or pa.shape[1:] != pb.shape[1:] or pa.numel() == 0):
        return None
    dense = pa.is_contiguous() or (pa.dim() == 4 and pa.is_contiguous(memory_format=torch.channels_last))
    if not dense or pa.stride(0) * pa.shape[0] != pa.numel():
        return None
    if (pa.untyped_storage().data_ptr() != pb.untyped_storage().data_ptr()
            or pb.data_ptr() != pa.data_ptr() + pa.numel() * pa.element_size()):
        return None
    return pa.detach().as_strided((pa.shape[0] + pb.shape[0],) + tuple(pa.shape[1:]), pa.stride())


def _per_tower(stage, x):
    """stage (channel-local: ReLU, LRN within the tower's channels, pooling) on each tower's half of the
    channels of x (N, 2C, H, W): one call on the (2N, C, H, W) view (x is NCHW, so the view is free)."""
    N, C2, H, W = x.shape
    y = stage(x.contiguous().view(N * 2, C2 // 2, H, W))
    return y.contiguous().view(N, C2, y.shape[2], y.shape[3])


def _linear_into_halves(x, fc_a, fc_b, relu):
    """[fc_a(x), fc_b(x)] (then ReLU in place) with each tower's addmm writing its half of one output."""
    out = x.new_empty((x.shape[0], fc_a.out_features + fc_b.out_features))
    torch.addmm(fc_a.bias, x, fc_a.weight.t(), out=out[:, :fc_a.out_features])
    torch.addmm(fc_b.bias, x, fc_b.weight.t(), out=out[:, fc_a.out_features:])
    return out.relu_() if relu else out


def _check_image(image):
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
        raise ValueError("AlexNet: expected an (N, 3, 227, 227) or (N, 3, 224, 224) image batch, got %s"
                         % (tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__,))
    size = tuple(image.shape[2:])
    if size == (INPUT_SIZE, INPUT_SIZE):
        return image
    if size == (224, 224):
        # cuda-convnet's 224 crops met the 11x11/s4 conv1 with 3 zero columns/rows on the right/bottom.
        return F.pad(image, (0, 3, 0, 3))
    raise ValueError("AlexNet: expected 227x227 input (or 224x224, zero-padded to 227 on the right and bottom), "
                     "got %dx%d" % size)


def _normal_in_logical_order_(p, mean, std):
    """p.normal_(mean, std) with the values drawn in index order whatever p's memory format: Conv2dReLU stores
    its weight channels_last, nn.Conv2d NCHW, and a seed must give both kernel sets the same network."""
    if p.is_contiguous():
        return p.normal_(mean, std)
    return p.copy_(torch.empty(p.shape, dtype=p.dtype, device=p.device).normal_(mean, std))


def spread_init_(net):
    """He-style weights and small random biases, for comparing two kernel sets (tests, benchmarks).  The
    paper's N(0, 0.01) with biases of 1 makes conv5's outputs nearly equal (about 1 + tiny), so its max-pool
    windows hold near-ties that a last-bit difference between two correct LRN kernels routes differently
    (torch's own pool does the same on such inputs): the comparison would measure tie-breaking, not kernels."""
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                _normal_in_logical_order_(p, 0.0, math.sqrt(2.0 / p[0].numel()))
            else:
                p.uniform_(-0.1, 0.1)
