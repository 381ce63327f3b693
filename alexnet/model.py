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

LRN: size 5, alpha 1e-4, beta 0.75, k 2, in PyTorch's convention (alpha divided by the size), within each
tower's 48 or 128 channels.  The paper's text writes alpha = 1e-4 without dividing by n, which would be
PyTorch's alpha = 5e-4; the released cuda-convnet code divided by n (its 1e-4 is PyTorch's 1e-4), and that is
what is used here (docs/lrn.md compares the libraries' conventions).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from alexnet_kernels.conv import Conv2dReLU
from alexnet_kernels.dropout import LinearReLUDropout
from alexnet_kernels.fused import ReLULRNMaxPool2d
from alexnet_kernels.pool import MaxPool2d

__all__ = ["AlexNet", "Tower", "KERNELS", "INPUT_SIZE", "spread_init_"]

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

    def extra_repr(self):
        return "num_classes=%d, kernels=%r, dropout=%s, devices=%s" % (
            self.num_classes, self.kernels, self.dropout,
            None if self.devices is None else tuple(str(d) for d in self.devices))


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
