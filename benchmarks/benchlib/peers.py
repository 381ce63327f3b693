"""The CPU peers: what a CPU user would run instead of our kernels -- onnxruntime and OpenVINO on one-node or few-node
ONNX graphs built with the `onnx` package (LRN, MaxPool, Relu -> LRN -> MaxPool, Conv + Relu, or an exported model),
and torch.compile (Inductor) -- each in fp32 with torch's thread count, and without paying for allocation: inputs
bound once, outputs preallocated (onnxruntime's IO binding; OpenVINO's infer request with shared-memory tensors).

A provider whose package is missing is skipped with peer_error()'s reason (`pip install ".[bench]"` installs them).
"""
import importlib

import torch


ONNX_PEERS = ("onnxruntime", "openvino")
CPU_PEERS = ("torch-compile",) + ONNX_PEERS
PEER_PACKAGES = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}
ONNX_OPSET = 17
ONNX_IR_VERSION = 8   # what onnxruntime >= 1.14 and OpenVINO >= 2023 read
INFERENCE_ONLY = "an inference runtime: no backward to time"
CPU_PEERS_NOTE = ("CPU peers: torch-compile = torch.compile (Inductor, default mode, dynamic=False, built once per "
                  "shape); onnxruntime / openvino = %s, built with the onnx package (opset 17) and run by "
                  "onnxruntime (CPUExecutionProvider, intra_op_num_threads = torch's threads, IO binding into a "
                  "preallocated output) and OpenVINO (CPU, INFERENCE_PRECISION_HINT f32, INFERENCE_NUM_THREADS = "
                  "torch's threads, shared-memory input and preallocated output): they pay no allocation, while "
                  "ours and torch's providers allocate their outputs each call; vs the best peer = the fastest "
                  "peer's median / this provider's, from the same interleaved rounds")


def peer_error(provider, mode="fwd"):
    """None if the ONNX runtime `provider` can run `mode` here, else why not (a package not installed, a mode
    with a backward)."""
    if provider not in PEER_PACKAGES:
        return None
    if mode != "fwd":
        return INFERENCE_ONLY
    for module in PEER_PACKAGES[provider]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return "%s is not installed (%s): pip install \".[bench]\"" % (module, exc)
    return None


# --- graphs ----------------------------------------------------------------------------------------------------

def onnx_model(nodes, input_shape, output_shape, initializers=()):
    """An fp32 ONNX model of `nodes` (onnx.helper.make_node) from the graph input "x" of input_shape to the output
    "y" of output_shape; initializers: onnx tensors (e.g. a Conv's weight)."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(list(nodes), "peer",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape))],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR_VERSION)
    onnx.checker.check_model(model)
    return model


def _lrn_node(source, target, size, alpha, beta, k):
    """ONNX's LRN, torch's window for odd sizes (ONNX's even-size window is the mirror image of torch's)."""
    from onnx import helper
    if size % 2 != 1:
        raise ValueError("ONNX LRN's window is torch's for odd sizes only, got size %d" % size)
    return helper.make_node("LRN", [source], [target], size=size, alpha=alpha, beta=beta, bias=k)


def _max_pool_node(source, target, kernel, stride, padding):
    from onnx import helper
    return helper.make_node("MaxPool", [source], [target], kernel_shape=[kernel] * 2, strides=[stride] * 2,
                            pads=[padding] * 4)


def pool_output_shape(shape, kernel, stride, padding):
    """(N, C, OH, OW) of a floor-mode pooling of (N, C, H, W)."""
    return tuple(shape[:2]) + tuple((s + 2 * padding - kernel) // stride + 1 for s in shape[2:])


def lrn_graph(shape, size, alpha, beta, k):
    """One LRN node."""
    return onnx_model([_lrn_node("x", "y", size, alpha, beta, k)], shape, shape)


def max_pool_graph(shape, kernel, stride, padding):
    """One MaxPool node (floor mode)."""
    return onnx_model([_max_pool_node("x", "y", kernel, stride, padding)], shape,
                      pool_output_shape(shape, kernel, stride, padding))


def relu_lrn_max_pool_graph(shape, size, alpha, beta, k, kernel, stride, padding):
    """Relu -> LRN -> MaxPool, three nodes (a runtime may fuse them)."""
    from onnx import helper
    nodes = [helper.make_node("Relu", ["x"], ["relu"]), _lrn_node("relu", "lrn", size, alpha, beta, k),
             _max_pool_node("lrn", "y", kernel, stride, padding)]
    return onnx_model(nodes, shape, pool_output_shape(shape, kernel, stride, padding))


def conv_relu_graph(shape, weight, bias, stride, padding, groups):
    """Conv (weight and bias as initializers) -> Relu."""
    from onnx import helper, numpy_helper
    w = numpy_helper.from_array(weight.detach().float().contiguous().numpy(), "w")
    b = numpy_helper.from_array(bias.detach().float().contiguous().numpy(), "b")
    kh, kw = weight.shape[2:]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], kernel_shape=[kh, kw], strides=[stride] * 2,
                              pads=[padding] * 4, group=groups),
             helper.make_node("Relu", ["conv"], ["y"])]
    out = [(s + 2 * padding - k) // stride + 1 for s, k in zip(shape[2:], (kh, kw))]
    return onnx_model(nodes, shape, (shape[0], weight.shape[0]) + tuple(out), [w, b])


# --- runners ---------------------------------------------------------------------------------------------------

def _numpy_input(x):
    """x as a C-contiguous fp32 numpy array sharing x's memory where it can."""
    return x.detach().float().contiguous().numpy()


def onnxruntime_fn(model, x, output_shape, threads=None):
    """A function running `model` (an onnx.ModelProto, or a path or bytes) in onnxruntime on x, into one
    preallocated output (IO binding), returning that output as a torch tensor.  CPUExecutionProvider,
    intra_op_num_threads = torch's threads, one inter-op thread, sequential execution, no spin-waiting."""
    import numpy as np
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No spin-waiting after a run: onnxruntime's idle threads otherwise spin on both cores for a while and the
    # provider timed next (interleaved rounds) pays for it -- measured 2026-12-07: torch's AlexNet batch 1 took
    # 48-54 ms right after a spinning session against 27-29 ms after a non-spinning one; onnxruntime itself
    # ran within ~5 % either way.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    xn = _numpy_input(x)
    out = np.empty(tuple(output_shape), dtype=np.float32)
    binding = session.io_binding()
    binding.bind_cpu_input(session.get_inputs()[0].name, xn)
    binding.bind_output(session.get_outputs()[0].name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
    result = torch.from_numpy(out)

    def run():
        session.run_with_iobinding(binding)
        return result
    run.keep = (session, xn, out)   # alive as long as the function
    return run


def openvino_fn(model, x, output_shape, threads=None):
    """A function running `model` (an onnx.ModelProto, or a path) compiled by OpenVINO for "CPU" on x, into one
    preallocated output (an infer request with shared-memory input and output tensors), returning that output as a
    torch tensor.  INFERENCE_PRECISION_HINT f32 (its default on CPUs with bf16 is bf16), INFERENCE_NUM_THREADS =
    torch's threads, PERFORMANCE_HINT LATENCY."""
    import numpy as np
    import openvino as ov
    core = ov.Core()
    source = core.read_model(model.SerializeToString() if hasattr(model, "SerializeToString") else model)
    compiled = core.compile_model(source, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                  "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
                                                  "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    xn = _numpy_input(x)
    out = np.empty(tuple(output_shape), dtype=np.float32)
    request.set_input_tensor(ov.Tensor(xn, shared_memory=True))
    request.set_output_tensor(ov.Tensor(out, shared_memory=True))
    result = torch.from_numpy(out)

    def run():
        request.infer()
        return result
    run.keep = (compiled, request, xn, out)
    return run


RUNNERS = {"onnxruntime": onnxruntime_fn, "openvino": openvino_fn}


def onnx_peer_fn(provider, model, x, output_shape):
    """The timed function of the ONNX runtime `provider` ("onnxruntime" or "openvino") on model and x."""
    return RUNNERS[provider](model, x, output_shape)
