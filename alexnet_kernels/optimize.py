"""Swap alexnet_kernels' modules into an existing model, keeping its parameters and state_dict.

    import alexnet_kernels
    model = alexnet_kernels.optimize(torchvision.models.alexnet())

Replaced (exact types only -- a subclass may override forward, so it is left alone):
    nn.LocalResponseNorm -> alexnet_kernels.lrn.LocalResponseNorm
    nn.MaxPool2d         -> alexnet_kernels.pool.MaxPool2d
    nn.Dropout           -> alexnet_kernels.dropout.Dropout (inplace=False: same output, input left unmodified)
and inside an nn.Sequential, where the fusion is visible from the order of the children:
    Conv2d, ReLU          -> Conv2dReLU, Identity
    Linear, ReLU, Dropout -> LinearReLUDropout(p), Identity, Identity  (Linear and Dropout in one train/eval
                                                                       mode; else the Dropout is kept)
    Linear, ReLU          -> LinearReLUDropout(p=0), Identity
(the exact nn.Sequential: a subclass may call its children differently).  The fused module takes over the
original's Parameter objects and the Identity keeps the ReLU's (and Dropout's) slot, so indices and
state_dict keys do not change.  ReLU(inplace=True) counts as a ReLU.  Convs with padding_mode != "zeros" or
dilation != 1 are not fused.  Hooks registered on a replaced module are not carried over.
Weight layout (channels_last_weights): None (default) decides by device.  A fused conv whose weight is on a
GPU gets it stored channels_last (the Parameter object stays the same; its storage is replaced by a
channels_last copy, once), as Conv2dReLU's own is: the GPU kernels then copy no weight per call and the
activations after the first fused conv are channels_last.  On the CPU the weights are left as they are:
backend "cpu" (oneDNN's conv with the ReLU fused) measures NCHW against channels_last per conv shape and batch
size, conversions included, which a channels_last weight would rule out (torch's layout rule makes the output
channels_last) -- at batch 1 the conversions and channels_last kernels can cost more than they save.  True or
False force channels_last or leave every weight as it is (an NCHW weight on the GPU is then converted once per
forward, the copy reused by its backward).
"""
import torch
import copy

import torch.nn as nn

from . import _backends
from .conv import Conv2dReLU
from .dropout import Dropout, LinearReLUDropout
from .lrn import LocalResponseNorm
from .pool import MaxPool2d

__all__ = ["optimize"]


def optimize(model, *, backend=None, inplace=True, channels_last_weights=None):
    """Replace the modules listed in the module docstring throughout `model` (recursively) and return it.

    backend: given to every new module (None: the package default).  inplace=False works on a deep copy and
    leaves `model` untouched.  Train/eval mode, device, dtype and requires_grad are kept (the parameters are
    the same objects).  channels_last_weights: None (by device: channels_last on GPUs, as they are on the
    CPU), True or False (module docstring).  If `model` itself is a replaceable leaf (e.g. an nn.MaxPool2d), the replacement is
    returned."""
    if not isinstance(model, nn.Module):
        raise TypeError("optimize: model must be a torch.nn.Module, got %s" % type(model).__name__)
    if not isinstance(inplace, bool):
        raise TypeError("optimize: inplace must be a bool, got %r" % (inplace,))
    if channels_last_weights is not None and not isinstance(channels_last_weights, bool):
        raise TypeError("optimize: channels_last_weights must be None or a bool, got %r"
                        % (channels_last_weights,))
    if backend is not None:
        _backends.validate_backend_argument("optimize", backend)
    if not inplace:
        model = copy.deepcopy(model)
    replacement = _replace_leaf(model, backend)
    if replacement is not None:
        return replacement
    _optimize_children(model, backend)
    if channels_last_weights is not False:
        for m in model.modules():
            if (isinstance(m, Conv2dReLU) and (channels_last_weights or m.weight.device.type != "cpu")
                    and not m.weight.is_contiguous(memory_format=torch.channels_last)):
                with torch.no_grad():
                    m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return model


def _optimize_children(module, backend):
    children = list(module.named_children())
    if type(module) is nn.Sequential:
        fused = _fuse_sequential(module, backend)
    else:
        fused = set()
    for name, child in children:
        if name in fused:
            continue
        replacement = _replace_leaf(child, backend)
        if replacement is not None:
            setattr(module, name, replacement)
        else:
            _optimize_children(child, backend)


def _fuse_sequential(seq, backend):
    """Fuse Conv2d/Linear -> ReLU (-> Dropout) runs in place; returns the names of the slots rewritten."""
    names = list(seq._modules)
    done = set()
    i = 0
    while i < len(names):
        layer = seq._modules[names[i]]
        nxt = [seq._modules[n] for n in names[i + 1:i + 3]]
        if len(nxt) >= 1 and type(nxt[0]) is nn.ReLU:
            fused, span = None, 2
            if _fusable_conv(layer):
                fused = _conv2d_relu(layer, backend)
            elif type(layer) is nn.Linear:
                p = 0.0
                # The fused module follows the Linear's train/eval mode: a Dropout in the other mode
                # (e.g. dropout frozen in eval while training) is left as its own module.
                if len(nxt) == 2 and type(nxt[1]) is nn.Dropout and nxt[1].training == layer.training:
                    p, span = nxt[1].p, 3
                fused = _linear_relu_dropout(layer, p, backend)
            if fused is not None:
                setattr(seq, names[i], fused)
                for n in names[i + 1:i + span]:
                    identity = nn.Identity()
                    identity.train(seq._modules[n].training)
                    setattr(seq, n, identity)
                done.update(names[i:i + span])
                i += span
                continue
        i += 1
    return done


def _fusable_conv(m):
    return type(m) is nn.Conv2d and m.padding_mode == "zeros" and tuple(m.dilation) == (1, 1)


def _adopt(new, old):
    """Give `new` the Parameter objects (and train/eval mode) of `old`, an nn.Conv2d or nn.Linear."""
    new.weight = old.weight
    new.bias = old.bias  # None registers "no bias", as nn.Linear/nn.Conv2d do
    new.train(old.training)
    return new


def _conv2d_relu(conv, backend):
    # Built on the meta device: its own parameters are placeholders, replaced by conv's at once.
    new = Conv2dReLU(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta",
                     backend=backend)
    return _adopt(new, conv)


def _linear_relu_dropout(linear, p, backend):
    new = LinearReLUDropout(linear.in_features, linear.out_features, linear.bias is not None, device="meta",
                            p=p, backend=backend)
    return _adopt(new, linear)


def _replace_leaf(m, backend):
    """The alexnet_kernels module for a parameter-free torch module, or None."""
    kind = type(m)
    if kind is nn.LocalResponseNorm:
        new = LocalResponseNorm(m.size, m.alpha, m.beta, m.k, backend=backend)
    elif kind is nn.MaxPool2d:
        new = MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.return_indices, m.ceil_mode,
                        backend=backend)
    elif kind is nn.Dropout:
        new = Dropout(m.p, backend=backend)
    else:
        return None
    new.train(m.training)
    return new
