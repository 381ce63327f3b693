"""ONNX export (alexnet_kernels.export): models using our ops export with torch.onnx.export (dynamo) to standard
ONNX ops, and onnxruntime / OpenVINO reproduce our eager outputs on fresh inputs of another batch size.

Needs onnx + onnxscript (the exporter) and onnxruntime; OpenVINO is optional.  Each test skips, naming the
package, where one is missing."""
import collections
import importlib

import numpy as np
import pytest
import torch
import torch.nn as nn

import alexnet_kernels
import alexnet_kernels.export as export
from alexnet_kernels import conv, dropout, fused, lrn, pool

FP32_RTOL = 1e-5  # the project's fp32 tolerance (relative L2 error)
RUNTIMES = ("onnxruntime", "openvino")


def _need(module, why="ONNX export"):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.skip("%s needs the %s package (not installed: %s)" % (why, module, e))


def _need_exporter():
    _need("onnx")
    _need("onnxscript")


class Exported:
    """A model exported once (at batch 2) and run in a runtime."""

    def __init__(self, model, example):
        _need_exporter()
        self.model = model
        self.example = example
        self.program = export.onnx_export(model, (example,))
        self.proto = self.program.model_proto
        self.bytes = self.proto.SerializeToString()
        self._compiled = {}

    def op_types(self):
        return collections.Counter(n.op_type for n in self.proto.graph.node)

    def run(self, runtime, x, tmp_path_factory):
        if runtime == "onnxruntime":
            ort = _need("onnxruntime", "this check")
            if runtime not in self._compiled:
                self._compiled[runtime] = ort.InferenceSession(self.bytes, providers=["CPUExecutionProvider"])
            sess = self._compiled[runtime]
            return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        ov = _need("openvino", "this check")
        if runtime not in self._compiled:
            path = tmp_path_factory.mktemp("onnx") / "model.onnx"
            self.program.save(str(path))
            # f32: OpenVINO's CPU plugin otherwise infers in bf16 on CPUs that have it.
            self._compiled[runtime] = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = self._compiled[runtime](x.numpy())
        return [result[i] for i in range(len(result))]


_CACHE = {}


def exported(key, make_model, example_shape, runtime):
    """Export each model once per session (exports take seconds); first skip if `runtime` is missing."""
    _need(runtime, "this check")
    if key not in _CACHE:
        _need_exporter()
        torch.manual_seed(0)
        model = make_model()
        if not any(isinstance(m, (dropout.Dropout, dropout.LinearReLUDropout)) for m in model.modules()):
            model.eval()  # no dropout: the mode changes nothing (and torch.onnx warns about training mode)
        _CACHE[key] = Exported(model, torch.randn(example_shape))
    return _CACHE[key]


def fresh(shape, batch=3, scale=1.0):
    return torch.randn((batch,) + tuple(shape[1:])) * scale


def rel_l2(got, ref):
    ref = np.asarray(ref, dtype=np.float64)
    return np.linalg.norm(np.asarray(got, dtype=np.float64) - ref) / max(np.linalg.norm(ref), 1e-300)


def eager(model, x):
    with torch.no_grad():
        out = model(x)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def assert_standard_onnx(ex):
    domains = {n.domain for n in ex.proto.graph.node}
    assert domains <= {"", "ai.onnx"}, "non-standard ONNX domains in the graph: %s" % domains
    batch_dim = ex.proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value"), "the batch dimension is not dynamic"


def check_outputs(ex, runtime, tmp_path_factory, batch=3, scale=1.0, exact=False):
    x = fresh(ex.example.shape, batch, scale)
    refs = eager(ex.model, x)
    got = ex.run(runtime, x, tmp_path_factory)
    assert len(got) == len(refs)
    for g, r in zip(got, refs):
        assert g.shape == r.shape and g.dtype == r.dtype
        if exact or not np.issubdtype(r.dtype, np.floating):
            np.testing.assert_array_equal(g, r)
        else:
            assert rel_l2(g, r) <= FP32_RTOL


# --- the translation table (no ONNX packages needed) ----------------------------------------------------

def test_translation_table_covers_every_forward_op():
    table = export.onnx_translation_table()
    # Every op a forward traces: the *_forward ops and the values-only max-pool of inference.
    forward_ops = {name for name in dir(torch.ops.alexnet_kernels)
                   if name.endswith("_forward") or name == "max_pool2d_values"}
    assert {op.name().split("::")[1] for op in table} == forward_ops
    assert all(isinstance(op, torch._ops.OpOverload) for op in table)


@pytest.mark.parametrize("size,channels,rank,native", [
    (1, 4, 4, True), (3, 4, 4, True), (5, 48, 4, True), (5, 5, 4, True),
    (2, 4, 4, False), (4, 96, 4, False),  # even: ONNX's window is torch's mirror image
    (5, 4, 4, False), (7, 3, 4, False),  # wider than the channels
    (5, None, 4, False), (3, 8, 3, False), (3, 8, 5, False),  # channels unknown; onnxruntime's LRN is 4-D only
])
def test_lrn_native_rule(size, channels, rank, native):
    assert export.onnx_lrn_uses_native(size, channels, rank) is native


# --- whole models -----------------------------------------------------------------------------------------

def _alexnet_ours():
    from alexnet import AlexNet
    return AlexNet(num_classes=10, kernels="ours").eval()


def _torchvision(name, **kw):
    torchvision = _need("torchvision", "the torchvision models")
    return lambda: alexnet_kernels.optimize(getattr(torchvision.models, name)(**kw)).eval()


MODELS = {
    # key: (factory, example input shape)
    "AlexNet(kernels='ours')": (_alexnet_ours, (2, 3, 224, 224)),
    "optimize(torchvision alexnet)": (lambda: _torchvision("alexnet", num_classes=10)(), (2, 3, 96, 96)),
    "optimize(torchvision vgg11)": (lambda: _torchvision("vgg11", num_classes=10)(), (2, 3, 32, 32)),
    "optimize(torchvision googlenet)": (lambda: _torchvision("googlenet", num_classes=10, aux_logits=False,
                                                             init_weights=True)(), (2, 3, 64, 64)),
}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("key", list(MODELS))
def test_model_round_trip(key, runtime, tmp_path_factory):
    ex = exported(key, *MODELS[key], runtime)
    assert_standard_onnx(ex)
    ops = ex.op_types()
    assert ops["Conv"] > 0 and ops["Relu"] > 0 and ops["MaxPool"] > 0
    assert "Dropout" not in ops  # eval mode: identity
    if key == "AlexNet(kernels='ours')":
        assert ops["LRN"] == 4  # two towers x two fused ReLU-LRN-pool blocks, size 5 on 48 / 128 channels
    for batch in (1, 3):
        check_outputs(ex, runtime, tmp_path_factory, batch=batch)


# --- one op at a time -------------------------------------------------------------------------------------

LRN_CASES = [  # (size, input shape): odd within the channels -> LRN; even or wider -> the composite
    (1, (2, 4, 5, 6)), (3, (2, 4, 5, 6)), (5, (2, 8, 5, 6)), (2, (2, 4, 5, 6)), (4, (2, 4, 5, 6)),
    (6, (2, 8, 3, 4)), (5, (2, 3, 4, 4)), (4, (2, 3, 4, 4)), (3, (2, 5, 7)), (4, (2, 5, 3, 4, 2)),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("size,shape", LRN_CASES)
def test_lrn(size, shape, runtime, tmp_path_factory):
    ex = exported(("lrn", size, shape), lambda: lrn.LocalResponseNorm(size, 1e-2, 0.75, 2.0), shape, runtime)
    assert_standard_onnx(ex)
    native = export.onnx_lrn_uses_native(size, shape[1], len(shape))
    assert ("LRN" in ex.op_types()) is native
    if not native:
        assert ex.op_types()["AveragePool"] == 1
    check_outputs(ex, runtime, tmp_path_factory, scale=3.0)


class RawMaxPool(nn.Module):
    """The custom op itself, returning the one-byte offsets too (the functional API returns y only)."""

    def __init__(self, kernel_size, stride, padding, ceil_mode):
        super().__init__()
        self.args = (list(kernel_size), list(stride), list(padding), ceil_mode)

    def forward(self, x):
        return torch.ops.alexnet_kernels.max_pool2d_forward(x, *self.args, "auto")


POOL_CASES = [  # (kernel, stride, padding, ceil_mode, H, W)
    ((3, 3), (2, 2), (0, 0), False, 13, 13),
    ((3, 3), (2, 2), (1, 1), True, 12, 13),
    ((2, 2), (2, 2), (0, 0), True, 7, 9),
    ((3, 3), (3, 3), (1, 1), True, 10, 11),  # ceil mode: torch drops the window starting in the right padding
    ((3, 2), (2, 1), (1, 0), True, 8, 9),
    ((2, 2), (3, 3), (1, 1), True, 5, 6),  # stride > kernel
]


class ValuesMaxPool(RawMaxPool):
    """The values-only custom op of inference (what MaxPool2d runs when no gradient is needed)."""

    def forward(self, x):
        return torch.ops.alexnet_kernels.max_pool2d_values(x, *self.args, "auto")


POOL_MODULES = {"module": lambda k, s, p, c: pool.MaxPool2d(k, s, p, ceil_mode=c), "values op": ValuesMaxPool}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,h,w", POOL_CASES)
@pytest.mark.parametrize("which", POOL_MODULES)
def test_max_pool(which, kernel, stride, padding, ceil_mode, h, w, runtime, tmp_path_factory):
    ex = exported((which, kernel, stride, padding, ceil_mode, h, w),
                  lambda: POOL_MODULES[which](kernel, stride, padding, ceil_mode), (2, 3, h, w), runtime)
    assert_standard_onnx(ex)
    assert ex.op_types() == {"MaxPool": 1}
    check_outputs(ex, runtime, tmp_path_factory, exact=True)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode,h,w", POOL_CASES)
def test_max_pool_offsets(kernel, stride, padding, ceil_mode, h, w, runtime, tmp_path_factory):
    ex = exported(("raw pool", kernel, stride, padding, ceil_mode, h, w),
                  lambda: RawMaxPool(kernel, stride, padding, ceil_mode), (2, 3, h, w), runtime)
    assert_standard_onnx(ex)
    check_outputs(ex, runtime, tmp_path_factory, exact=True)  # y and the uint8 offsets, bit for bit


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_max_pool_dilation(runtime, tmp_path_factory):
    """dilation != 1 is torch's pooling (the functional API delegates it): it exports through torch's table."""
    ex = exported("pool dilation", lambda: pool.MaxPool2d(3, 2, 1, dilation=2), (2, 3, 11, 12), runtime)
    assert_standard_onnx(ex)
    assert ex.op_types()["MaxPool"] == 1
    check_outputs(ex, runtime, tmp_path_factory, exact=True)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("size", [5, 4])
def test_fused_block(size, runtime, tmp_path_factory):
    ex = exported(("fused", size), lambda: fused.ReLULRNMaxPool2d(size, 1e-4, 0.75, 2.0, 3, 2, 1, True),
                  (2, 8, 13, 13), runtime)
    assert_standard_onnx(ex)
    ops = ex.op_types()
    assert ops["Relu"] == 1 and ops["MaxPool"] == 1 and ("LRN" in ops) is (size % 2 == 1)
    check_outputs(ex, runtime, tmp_path_factory, scale=3.0)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_relu(bias, runtime, tmp_path_factory):
    ex = exported(("conv", bias), lambda: conv.Conv2dReLU(4, 6, (3, 2), (2, 1), (1, 0), groups=2, bias=bias),
                  (2, 4, 9, 9), runtime)
    assert_standard_onnx(ex)
    assert ex.op_types() == {"Conv": 1, "Relu": 1}
    check_outputs(ex, runtime, tmp_path_factory)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_linear_relu_dropout_eval(runtime, tmp_path_factory):
    ex = exported("linear eval", lambda: dropout.LinearReLUDropout(8, 16, p=0.5).eval(), (2, 8), runtime)
    assert "Dropout" not in ex.op_types() and ex.op_types()["Relu"] == 1
    check_outputs(ex, runtime, tmp_path_factory)


def _dropout_statistics(got, kept_value, p):
    """Every output is 0 or the kept value / (1 - p), and the dropped fraction is p within 5 sigma."""
    got = np.asarray(got, dtype=np.float64)
    expect = np.asarray(kept_value, dtype=np.float64) / (1 - p)
    kept = got != 0
    assert np.allclose(got[kept], expect[kept], rtol=FP32_RTOL, atol=0)
    candidates = expect != 0
    dropped = np.count_nonzero(~kept & candidates) / np.count_nonzero(candidates)
    assert abs(dropped - p) < 5 * (p * (1 - p) / np.count_nonzero(candidates)) ** 0.5


def test_dropout_training_mode(tmp_path_factory):
    """A model exported in training mode keeps its dropout: ONNX Dropout(training_mode=True) with its own
    mask.  (OpenVINO rejects training-mode Dropout: onnxruntime only.)"""
    p = 0.3
    ex = exported("dropout train", lambda: dropout.Dropout(p).train(), (2, 64, 32), "onnxruntime")
    assert ex.op_types()["Dropout"] == 1
    x = fresh(ex.example.shape)
    (got,) = ex.run("onnxruntime", x, tmp_path_factory)
    _dropout_statistics(got, x.numpy(), p)


def test_linear_relu_dropout_training_mode(tmp_path_factory):
    p = 0.5
    ex = exported("linear train", lambda: dropout.LinearReLUDropout(64, 256, p=p).train(), (2, 64), "onnxruntime")
    assert ex.op_types()["Dropout"] == 1
    x = fresh(ex.example.shape, batch=16)
    (got,) = ex.run("onnxruntime", x, tmp_path_factory)
    with torch.no_grad():
        kept_value = torch.relu(nn.functional.linear(x, ex.model.weight, ex.model.bias))
    _dropout_statistics(got, kept_value.numpy(), p)


def test_onnx_export_passes_user_entries():
    """custom_translation_table entries of the caller join ours."""
    _need_exporter()
    from onnxscript import opset18 as op

    def neg_relu(self):
        return op.Neg(op.Relu(self))

    model = nn.Sequential(conv.Conv2dReLU(3, 4, 3), nn.ReLU()).eval()
    program = export.onnx_export(model, (torch.randn(2, 3, 8, 8),),
                                 custom_translation_table={torch.ops.aten.relu.default: neg_relu})
    ops = collections.Counter(n.op_type for n in program.model_proto.graph.node)
    assert ops["Conv"] == 1 and ops["Neg"] == 1
