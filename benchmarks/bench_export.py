"""Benchmark of deployment (issue 27): AlexNet inference on the CPU in our eager kernels vs the same model exported to
ONNX (alexnet_kernels.export.onnx_export) and run in onnxruntime and OpenVINO.

    pytest benchmarks/bench_export.py --benchmark-only

Case: alexnet.AlexNet(num_classes=1000, kernels=...), the 2012 two-tower net, eval mode (dropout off), fp32,
x torch.randn (BENCH_EXPORT_BATCH (default 8), 3, 227, 227), NCHW, under torch.inference_mode for the eager rows.
Providers (cpu):
  ours-cpu          AlexNet(kernels="ours") eager (alexnet_kernels' C++ CPU kernels)
  torch-cpu         AlexNet(kernels="torch") eager, the same parameters (the baseline)
  ours-onnxruntime  AlexNet(kernels="ours") exported with onnx_export (native ONNX LRN nodes), run by onnxruntime
                    (CPUExecutionProvider, default session options)
  torch-onnxruntime AlexNet(kernels="torch") exported by torch.onnx.export (dynamo): its LRN is torch's
                    Pad/AveragePool/Pow/Div composite
  ours-openvino     the ours export compiled by OpenVINO for "CPU" with INFERENCE_PRECISION_HINT f32
  torch-openvino    the torch export, the same
Correctness before timing: every provider's logits within the project's fp32 tolerance (relative L2 1e-5) of
ours-cpu's on the benchmark input; a provider that is not installed or fails the check is skipped with the reason.
Metric: images/s = batch / the median of CPU_ROUNDS timed calls (pytest-benchmark pedantic rounds), after one
warm-up call.
"""
import os

import numpy as np
import pytest
import torch

import benchlib as common

OP = "alexnet_inference_export"
BATCH = int(os.environ.get("BENCH_EXPORT_BATCH", "8"))
IMAGE = 227
CPU_ROUNDS = 10
TOLERANCE = 1e-5
PROVIDERS = ("ours-cpu", "torch-cpu", "ours-onnxruntime", "torch-onnxruntime", "ours-openvino", "torch-openvino")

common.register_op(
    OP, title="AlexNet inference: eager vs exported to ONNX (onnxruntime, OpenVINO)",
    case_fields=("batch", "image", "precision"),
    providers={"cpu": PROVIDERS}, baselines={"cpu": ("torch-cpu",)},
    short_names={p: p for p in PROVIDERS}, cell="rate", rate_unit="img/s",
    notes=["model: alexnet.AlexNet(num_classes=1000), eval, fp32; x torch.randn (N, 3, 227, 227) NCHW",
           "ONNX: alexnet_kernels.export.onnx_export (dynamic batch), torch.onnx.export (dynamo) default opset",
           "onnxruntime: CPUExecutionProvider, default options; OpenVINO: CPU, INFERENCE_PRECISION_HINT f32"])

_STATE = {}


def _models():
    if "models" not in _STATE:
        from alexnet import AlexNet
        torch.manual_seed(0)
        ours = AlexNet(num_classes=1000, kernels="ours").eval()
        ref = AlexNet(num_classes=1000, kernels="torch").eval()
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(BATCH, 3, IMAGE, IMAGE)
        with torch.inference_mode():
            logits = ours(x).numpy()
        _STATE["models"] = {"ours": ours, "torch": ref}, x, logits
    return _STATE["models"]


def _exported(kernels, tmp_path_factory):
    key = ("onnx", kernels)
    if key not in _STATE:
        import alexnet_kernels.export as export
        models, x, _ = _models()
        path = str(tmp_path_factory.mktemp("onnx") / ("alexnet-%s.onnx" % kernels))
        export.onnx_export(models[kernels], (x,), path)
        _STATE[key] = path
    return _STATE[key]


def _runner(provider, tmp_path_factory):
    models, x, _ = _models()
    kernels, _, runtime = provider.partition("-")
    if runtime == "cpu":
        model = models[kernels]

        def run():
            with torch.inference_mode():
                return model(x).numpy()
        return run
    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}[runtime]
    try:
        lib = __import__(module)
        __import__("onnxscript")
    except ImportError as e:
        return "not installed: %s" % e
    path = _exported(kernels, tmp_path_factory)
    xn = x.numpy()
    if runtime == "onnxruntime":
        sess = lib.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: xn})[0]
    compiled = lib.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda: compiled(xn)[0]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_alexnet_inference_export_cpu(benchmark, provider, tmp_path_factory):
    case = {"batch": BATCH, "image": "%dx%d" % (IMAGE, IMAGE), "precision": "fp32"}
    benchmark.group = "alexnet-cpu inference fp32"
    fn = _runner(provider, tmp_path_factory)
    if isinstance(fn, str):
        common.skip(OP, "cpu", case, provider, fn)
    _, _, logits = _models()
    got = np.asarray(fn(), dtype=np.float64)
    err = float(np.linalg.norm(got - logits) / np.linalg.norm(logits))
    if not err <= TOLERANCE:
        if provider == "ours-cpu":
            pytest.fail("ours-cpu differs from itself: %g" % err)
        common.skip(OP, "cpu", case, provider, "logits differ from ours-cpu by %.3g (relative L2)" % err)
    benchmark.pedantic(fn, rounds=CPU_ROUNDS, iterations=1, warmup_rounds=1)
    ms = common.cpu_median_ms(benchmark, fn, runs=CPU_ROUNDS)
    common.record(benchmark, OP, "cpu", case, provider, ms, items=BATCH, rel_err_vs_ours=err)
