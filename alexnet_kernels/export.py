"""ONNX export of models that use alexnet_kernels' ops: standard ONNX operators for every custom op.

    import alexnet_kernels.export
    onnx_program = alexnet_kernels.export.onnx_export(model, (x,), "model.onnx")
    # or, with torch.onnx.export itself:
    torch.onnx.export(model, (x,), "model.onnx", dynamo=True,
                      custom_translation_table=alexnet_kernels.export.onnx_translation_table())

torch.onnx.export (dynamo=True, the default from torch 2.9) traces the model with torch.export, where our
functional API calls the ``alexnet_kernels::*`` custom ops; the table below gives each forward op its ONNX
graph (the backward ops are never exported: export traces the forward only):

    conv2d_relu_forward          Conv + Relu
    lrn_forward                  LRN where ONNX's window is torch's: odd size and size <= C.  Else (even size,
                                 or a window wider than the channels) torch's own composite: Mul, Pad,
                                 AveragePool over the channel axis, Mul, Add, Pow, Div.  ONNX's LRN window for
                                 an even size n is [c - (n/2 - 1), c + n/2], the mirror image of torch's
                                 [c - n/2, c + n/2 - 1] (ours follows torch).
    max_pool2d_forward           MaxPool (ceil_mode, padding); the one-byte offsets from MaxPool's indices
    max_pool2d_values            MaxPool (the values-only forward of inference: no gradient needed)
    relu_lrn_max_pool2d_forward  Relu, then the LRN above, then MaxPool
    dropout_forward              Dropout(training_mode=True) -- only in a model exported in training mode:
                                 in eval our modules do not call the op, so the graph has no dropout
    bias_relu_dropout_forward    Add + Relu (+ Dropout(training_mode=True) when p > 0)

Dropout in the ONNX graph draws its own mask from the runtime's generator: the masks differ from ours (which
are a function of torch's generator state); the kept values (x / (1 - p)) and the rate are the same.
dilation != 1 and windows of more than 256 elements never reach our pooling op (the functional API hands
them to torch), so they export through torch's own translation.
"""
from typing import Sequence

import torch

__all__ = ["onnx_translation_table", "onnx_export"]


def _onnx_op():
    """onnxscript's opset 18 ops, the opset torch.onnx's own translations are written against."""
    try:
        from onnxscript import opset18
    except ImportError as e:  # torch.onnx.export(dynamo=True) itself needs onnxscript
        raise ImportError("alexnet_kernels.export: ONNX export needs the onnxscript and onnx packages "
                          "(pip install onnx onnxscript): %s" % e) from None
    return opset18


def _pads(padding):
    """torch's symmetric (pH, pW) -> ONNX's (begin_h, begin_w, end_h, end_w)."""
    return [int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])]


def _static_dim(value, axis):
    """The int size of `value`'s dim `axis` when the exporter knows it, else None."""
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) <= axis:
        return None
    dim = shape[axis]
    return dim if isinstance(dim, int) else None


def _rank(value):
    shape = getattr(value, "shape", None)
    return None if shape is None else len(shape)


def onnx_lrn_uses_native(size, channels, rank):
    """Whether the graph takes ONNX's LRN node: its window [c - floor((n-1)/2), c + ceil((n-1)/2)] is torch's
    [c - floor(n/2), c + floor((n-1)/2)] for odd n only; a window wider than the channels (or channels unknown
    at export time) takes the composite, and so does an input of other than 4 dims (onnxruntime's LRN kernel
    takes 4-D only)."""
    return size % 2 == 1 and channels is not None and size <= channels and rank == 4


def _lrn(op, x, size, alpha, beta, k, channels, rank):
    if onnx_lrn_uses_native(size, channels, rank):
        return op.LRN(x, size=size, alpha=alpha, beta=beta, bias=k)
    # torch.nn.functional.local_response_norm's composite: the squares averaged over a window of `size`
    # channels, zero-padded size // 2 before and (size - 1) // 2 after, on an (N, 1, C, L) view.
    squares = op.Mul(x, x)
    shape = op.Shape(x)
    view = op.Concat(op.Slice(shape, [0], [2]), op.Constant(value_ints=[-1]), axis=0)  # (N, C, L)
    squares = op.Unsqueeze(op.Reshape(squares, view), [1])  # (N, 1, C, L)
    zero = op.CastLike(op.Constant(value_float=0.0), x)
    squares = op.Pad(squares, op.Constant(value_ints=[0, 0, size // 2, 0, 0, 0, (size - 1) // 2, 0]), zero)
    mean = op.AveragePool(squares, kernel_shape=[size, 1], strides=[1, 1])
    mean = op.Reshape(op.Squeeze(mean, [1]), shape)
    alpha_t = op.CastLike(op.Constant(value_float=alpha), x)
    k_t = op.CastLike(op.Constant(value_float=k), x)
    beta_t = op.CastLike(op.Constant(value_float=beta), x)
    return op.Div(x, op.Pow(op.Add(op.Mul(mean, alpha_t), k_t), beta_t))


def _pool_pads(hw, kernel_size, stride, padding, ceil_mode):
    """MaxPool's pads and ceil_mode attributes for torch's output size.  With the spatial size known, ceil
    mode is written as floor mode with the end padding that gives torch's size: runtimes disagree on ONNX's
    ceil mode when the last window would start in the right padding (torch drops it, onnxruntime too; ONNX's
    shape inference and OpenVINO keep it).  The end padding stays below the kernel size (torch's last window
    starts inside the input), and padding is never part of a maximum."""
    pads = _pads(padding)
    if not ceil_mode:
        return {"pads": pads, "ceil_mode": 0}
    if None in hw:
        return {"pads": pads, "ceil_mode": 1}
    from .ops.pool import output_size
    for i in range(2):
        out = output_size(hw[i], kernel_size[i], stride[i], padding[i], True)
        pads[2 + i] = max(padding[i], (out - 1) * stride[i] - padding[i] + kernel_size[i] - hw[i])
    return {"pads": pads, "ceil_mode": 0}


def _spatial(x):
    return _static_dim(x, 2), _static_dim(x, 3)


def _max_pool(op, x, kernel_size, stride, padding, ceil_mode, hw):
    """MaxPool, and our one-byte in-window offsets (ih - hstart) * kW + (iw - wstart) from its indices, which
    ONNX flattens over the whole (N, C, H, W) tensor (an exporter drops them when nothing reads them)."""
    y, indices = op.MaxPool(x, kernel_shape=list(kernel_size), strides=list(stride),
                            **_pool_pads(hw, kernel_size, stride, padding, ceil_mode))
    x_shape = op.Shape(x)
    y_shape = op.Shape(y)
    height, width = op.Slice(x_shape, [2], [3]), op.Slice(x_shape, [3], [4])
    plane = op.Mul(height, width)
    flat = op.Mod(indices, plane)
    ih, iw = op.Div(flat, width), op.Mod(flat, width)
    one = op.Constant(value_int=1)
    zero = op.Constant(value_int=0)
    hstart = op.Sub(op.Mul(op.Range(zero, op.Squeeze(op.Slice(y_shape, [2], [3]), [0]), one),
                           op.Constant(value_int=int(stride[0]))), op.Constant(value_int=int(padding[0])))
    wstart = op.Sub(op.Mul(op.Range(zero, op.Squeeze(op.Slice(y_shape, [3], [4]), [0]), one),
                           op.Constant(value_int=int(stride[1]))), op.Constant(value_int=int(padding[1])))
    hstart = op.Unsqueeze(hstart, [1])  # (OH, 1)
    offsets = op.Add(op.Mul(op.Sub(ih, hstart), op.Constant(value_int=int(kernel_size[1]))), op.Sub(iw, wstart))
    return y, op.Cast(offsets, to=2)  # 2: UINT8


def _training_dropout(op, x, p):
    ratio = op.CastLike(op.Constant(value_float=p), x)
    y, _ = op.Dropout(x, ratio, op.Constant(value=_bool_tensor(True)))
    return y


def _bool_tensor(value):
    import onnx
    return onnx.helper.make_tensor("training_mode", onnx.TensorProto.BOOL, [], [bool(value)])


# --- translations: one per forward custom op, parameters named and ordered as its schema ---------------------

def conv2d_relu_forward(x, weight, bias, stride: Sequence[int], padding: Sequence[int],
                        groups: int, allow_tf32: bool, backend: str, route: str):
    op = _onnx_op()
    inputs = (x, weight) if bias is None else (x, weight, bias)
    y = op.Conv(*inputs, strides=list(stride), pads=_pads(padding), group=int(groups))
    return op.Relu(y)


def lrn_forward(x, size: int, alpha: float, beta: float, k: float, backend: str):
    return _lrn(_onnx_op(), x, size, alpha, beta, k, _static_dim(x, 1), _rank(x))


def max_pool2d_forward(x, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                       ceil_mode: bool, backend: str):
    return _max_pool(_onnx_op(), x, kernel_size, stride, padding, ceil_mode, _spatial(x))


def max_pool2d_values(x, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                      ceil_mode: bool, backend: str):
    op = _onnx_op()
    y, _ = op.MaxPool(x, kernel_shape=list(kernel_size), strides=list(stride),
                      **_pool_pads(_spatial(x), kernel_size, stride, padding, ceil_mode))
    return y


def relu_lrn_max_pool2d_forward(x, size: int, alpha: float, beta: float, k: float, kernel_size: Sequence[int],
                                stride: Sequence[int], padding: Sequence[int], ceil_mode: bool, backend: str):
    op = _onnx_op()
    # Sizes are read from x: values the translation creates (the Relu, the LRN) carry no shape.
    normalised = _lrn(op, op.Relu(x), size, alpha, beta, k, _static_dim(x, 1), _rank(x))
    return _max_pool(op, normalised, kernel_size, stride, padding, ceil_mode, _spatial(x))


def dropout_forward(x, seed, p: float, backend: str):
    return _training_dropout(_onnx_op(), x, p)


def bias_relu_dropout_forward(x, bias, seed, p: float, backend: str):
    op = _onnx_op()
    y = op.Relu(op.Add(x, bias))
    return _training_dropout(op, y, p) if p > 0 else y


_TRANSLATIONS = (conv2d_relu_forward, lrn_forward, max_pool2d_forward, max_pool2d_values,
                 relu_lrn_max_pool2d_forward, dropout_forward, bias_relu_dropout_forward)


def onnx_translation_table():
    """{torch.ops.alexnet_kernels.<op>.default: its ONNX translation} for torch.onnx.export's
    custom_translation_table (dynamo=True)."""
    from . import ops  # noqa: F401  (the custom ops are registered on import of the package)
    return {getattr(torch.ops.alexnet_kernels, fn.__name__).default: fn for fn in _TRANSLATIONS}


def onnx_export(model, args, f=None, *, dynamic_batch=True, custom_translation_table=None, **kwargs):
    """torch.onnx.export(model, args, f, dynamo=True, ...) with our ops' translations, returning the
    ONNXProgram.  dynamic_batch=True (unless dynamic_shapes is given) marks dim 0 of every tensor argument
    as the dynamic "batch".  custom_translation_table entries are added to ours (theirs win); other keyword
    arguments go to torch.onnx.export."""
    table = onnx_translation_table()
    table.update(custom_translation_table or {})
    if not isinstance(args, tuple):
        args = (args,)
    if dynamic_batch and "dynamic_shapes" not in kwargs and "dynamic_axes" not in kwargs:
        batch = torch.export.Dim("batch")
        kwargs["dynamic_shapes"] = tuple({0: batch} if isinstance(a, torch.Tensor) else None for a in args)
    return torch.onnx.export(model, args, f, dynamo=True, custom_translation_table=table, **kwargs)
