"""Benchmarks of the fused 2-D convolution + bias + ReLU on the five conv layers of the 2012 AlexNet (issue 5).

    pytest benchmarks/bench_conv.py --benchmark-only
    pytest benchmarks/bench_conv.py --benchmark-only -k "bf16 and conv2"        # a subset
    BENCH_CONV_COMPILE_MODE=default pytest benchmarks/bench_conv.py ...         # torch.compile without autotuning

GPU (test_conv2d_relu_gpu): batch 128, channels_last input and weight, the layers as the 2012 net has them
(groups=2 where the paper's two towers split a layer):
  conv1    3 ->  96, 11x11 stride 4, padding 0, 227x227, groups 1
  conv2   96 -> 256,  5x5  stride 1, padding 2,  27x27,  groups 2
  conv3  256 -> 384,  3x3  stride 1, padding 1,  13x13,  groups 1
  conv4  384 -> 384,  3x3  stride 1, padding 1,  13x13,  groups 2
  conv5  384 -> 256,  3x3  stride 1, padding 1,  13x13,  groups 2
bf16, fp16 and fp32 (fp32 with torch.backends.cudnn.allow_tf32 = True, torch's default for convolutions: TF32
tensor cores, labelled "fp32 (TF32)"); modes
  fwd      y = relu(conv2d(x, w, b))
  fwd+bwd  torch.autograd.grad(relu(conv2d(x, w, b)), (x, w, b), dy)  -- dy random, the same for every provider
providers
  ours           alexnet_kernels.conv.conv2d_relu(backend="triton")
  ours-cuda      conv2d_relu(backend="cuda"): the hand-written CUDA C++ implicit GEMMs (csrc/conv_cuda.cu), forward
                 and backward (dgrad + wgrad)
  ours-auto      conv2d_relu(backend="auto") (what it measured and chose is in the JSON as auto_choices)
  ours-bwd-triton, ours-bwd-aten  (fwd+bwd only) backend="triton" with backward_route="triton" (Triton dgrad
                 and wgrad) / "aten" (a Triton mask + dbias pass, then cuDNN's dgrad and wgrad); ours uses
                 backward_route="auto", which measures both once per shape and keeps the faster
  cudnn          torch.relu(F.conv2d(...)) (cuDNN, torch.backends.cudnn.benchmark on: see BENCH_CUDNN_BENCHMARK)
  cudnn-fused    torch.ops.aten.cudnn_convolution_relu (cuDNN's fused conv + bias + ReLU; forward only: it has
                 no autograd formula, so its fwd+bwd cases are skipped with the error)
  torch-compile  torch.compile(relu(F.conv2d(...)), mode=$BENCH_CONV_COMPILE_MODE, default "max-autotune")
CPU (test_conv2d_relu_cpu): fp32, channels_last, AlexNet's conv1 and conv2 at batch 32 and 1 (fwd) and at batch 1
(fwd+bwd): ours-cpu (conv2d_relu(backend="auto")) vs torch-cpu (torch.relu(F.conv2d(...))) and the peers
(benchlib/peers.py: torch-compile (mode "default"), and an ONNX Conv -> Relu graph in onnxruntime and OpenVINO, which
read NCHW, forward only); all providers of a case timed interleaved (benchlib/interleave.py).  The Triton kernels are not run on the CPU (the interpreter is far too
slow for a benchmark; tests/ covers them under TRITON_INTERPRET=1).

Cells: median ms, TFLOP/s of the FLOP model (2 N OH OW Cout (Cin/groups) KH KW per forward, 3x that for
fwd+bwd), % of the bf16 matmul peak measured in the same session (benchlib.gpu_matmul_tflops).  After the
table: the sum over the layers of each provider's ms per mode and dtype, and ours vs cudnn on that sum (the
issue's bar: fwd+bwd >= 1.0x).

Correctness before timing, against float64 on the same device and the same (rounded) inputs: fwd compares y;
fwd+bwd runs one untimed forward + backward and compares y, then dx, dw, db against the float64 backward
through the provider's own ReLU mask (y > 0): where a pre-activation is within rounding of 0 the mask may
legitimately differ from float64's, and such a flip moves a gradient by a whole dy.  Elementwise:
|got - ref| <= atol * rms(ref) + rtol * |ref|, (atol, rtol) in TOLERANCES.  Ours wrong or raising fails;
ours raising BackendUnavailableError (a case its kernels do not take) and a baseline that raises or is wrong
are skipped with the reason.

Environment:
  BENCH_CONV_COMPILE_MODE=mode  torch.compile's mode for torch-compile (default "max-autotune"; "default" or
                                "max-autotune-no-cudagraphs" when autotuning takes too long or fails)
  BENCH_CUDNN_BENCHMARK=1|0     torch.backends.cudnn.benchmark during the GPU cases (default 1: cuDNN times its
                                algorithms and keeps the fastest, the strongest baseline)
"""
import collections
import inspect
import os

import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels
from alexnet_kernels import conv

import benchlib as common

OP = "conv2d_relu"
LAYOUT = "channels_last"
COMPILE_MODE = os.environ.get("BENCH_CONV_COMPILE_MODE", "max-autotune").strip() or "max-autotune"
CUDNN_BENCHMARK = os.environ.get("BENCH_CUDNN_BENCHMARK", "1").strip().lower() not in ("0", "false", "no", "off")

Layer = collections.namedtuple("Layer", "name cin cout kernel stride padding groups hw batch")
GPU_BATCH = 128
LAYERS = (
    Layer("conv1", 3, 96, 11, 4, 0, 1, 227, GPU_BATCH),
    Layer("conv2", 96, 256, 5, 1, 2, 2, 27, GPU_BATCH),
    Layer("conv3", 256, 384, 3, 1, 1, 1, 13, GPU_BATCH),
    Layer("conv4", 384, 384, 3, 1, 1, 2, 13, GPU_BATCH),
    Layer("conv5", 384, 256, 3, 1, 1, 2, 13, GPU_BATCH),
)
# CPU: AlexNet's conv1 and conv2 at batch 32 and 1 (forward), and at batch 1 (forward + backward)
CPU_LAYERS = tuple(layer._replace(batch=batch) for batch in (32, 1) for layer in LAYERS[:2])
CPU_BWD_BATCH = 1
MODES = ("fwd", "fwd+bwd")
GPU_DTYPES = ("bf16", "fp16", "fp32")
DTYPE_LABELS = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32 (TF32)"}   # GPU; the CPU runs true fp32
DTYPE_IDS = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32-tf32"}
GPU_PROVIDERS = ("ours", "ours-cuda", "ours-auto", "ours-bwd-triton", "ours-bwd-aten", "cudnn", "cudnn-fused", "torch-compile")
ROUTE_PROVIDERS = {"ours-bwd-triton": "triton", "ours-bwd-aten": "aten"}   # fwd+bwd only
CPU_PROVIDERS = ("ours-cpu", "torch-cpu") + common.CPU_PEERS
CPU_COMPILE_MODE = "default"   # max-autotune's GEMM search is for the GPU
OURS_BACKEND = {"ours": "triton", "ours-cuda": "cuda", "ours-auto": "auto", "ours-bwd-triton": "triton",
                "ours-bwd-aten": "triton",
                "ours-cpu": "auto"}
OURS = tuple(OURS_BACKEND)
SUM_PAIRS = {"cuda": ("ours", "cudnn")}   # the summary's ratio (GPU: the CPU cases mix batches)
SUM_BAR = 1.0   # issue 5: the sum over the five layers, fwd+bwd, ours vs cudnn >= 1.0x

# (atol as a fraction of the reference's RMS, rtol), by dtype label.  bf16/fp16: the output rounding (2^-9,
# 2^-11 relative) with fp32 accumulation; TF32: inputs rounded to 10 mantissa bits (~1e-2 relative); fp32
# (CPU, no TF32): fp32 accumulation only.
TOLERANCES = {"bf16": (1e-2, 2e-2), "fp16": (2e-3, 5e-3), "fp32 (TF32)": (1e-2, 1e-2), "fp32": (1e-4, 1e-4)}


def layer_label(layer):
    return "%s %d->%d %dx%d/%d p%d g%d" % (layer.name, layer.cin, layer.cout, layer.kernel, layer.kernel,
                                           layer.stride, layer.padding, layer.groups)


def input_shape(layer):
    return (layer.batch, layer.cin, layer.hw, layer.hw)


def output_hw(layer):
    return (layer.hw + 2 * layer.padding - layer.kernel) // layer.stride + 1


def forward_flops(layer):
    oh = output_hw(layer)
    return (2 * layer.batch * oh * oh * layer.cout * (layer.cin // layer.groups) * layer.kernel * layer.kernel)


def flops(layer, mode):
    """The FLOP model, the same for every provider: 2 N OH OW Cout (Cin/g) KH KW per forward (bias and ReLU
    not counted), 3x for fwd+bwd (forward, dgrad, wgrad)."""
    return forward_flops(layer) * (3 if mode == "fwd+bwd" else 1)


# --------------------------------------------------------------------------------------------------
# The summary: sum over the layers

def conv_summary(op, device, c):
    """Per mode and dtype: each provider's ms summed over the layers (only providers measured on every layer),
    and ours vs the baseline of SUM_PAIRS on that sum; on cuda, the issue's bar on the fwd+bwd sums."""
    rows = c.rows_of(op, device)
    if not rows or device not in SUM_PAIRS:
        return [], None
    layers = [layer_label(layer) for layer in LAYERS]
    providers = [p for p in c.ops[op]["providers"].get(device, ()) if any(r["provider"] == p for r in rows)]
    ours, base = SUM_PAIRS[device]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    header = ["mode", "dtype"] + providers + ["%s vs %s" % (ours, base)]
    if device == "cuda":
        header.append("bar (fwd+bwd >= %.1fx)" % SUM_BAR)
    table, data = [], []
    for mode in MODES:
        for dtype in dtypes:
            ms = {}
            for p in providers:
                by_layer = {r["layer"]: r["ms"] for r in rows
                            if r["provider"] == p and r["mode"] == mode and r["dtype"] == dtype}
                if by_layer and all(lab in by_layer for lab in layers):
                    ms[p] = sum(by_layer[lab] for lab in layers)
            if not ms:
                continue
            ratio = ms[base] / ms[ours] if ours in ms and base in ms and ms[ours] > 0 else None
            cells = [mode, dtype] + [common._fmt_ms(ms[p]) + " ms" if p in ms else "—" for p in providers]
            cells.append("%.2fx" % ratio if ratio is not None else "—")
            entry = {"mode": mode, "dtype": dtype, "sum_ms": ms, "ratio": ratio, "layers": len(layers)}
            if device == "cuda":
                if mode != "fwd+bwd":
                    bar = ""
                elif ratio is None:
                    bar = "unmeasured"
                else:
                    bar = "met" if ratio >= SUM_BAR else "not met"
                cells.append(bar)
                entry["bar"] = bar or None
            table.append(cells)
            data.append(entry)
    if not table:
        return [], None
    lines = ["Sum over the %d layers (ms; a provider is summed only where it ran on every layer):" % len(layers),
             ""] + common.markdown_table(header, table)
    return lines, data


common.register_op(
    OP, title="conv2d + bias + ReLU",
    case_fields=("mode", "layer", "shape", "dtype", "layout"),
    providers={"cuda": GPU_PROVIDERS, "cpu": CPU_PROVIDERS},
    baselines={"cuda": ("cudnn", "cudnn-fused", "torch-compile"), "cpu": ("torch-cpu",)},
    peers={"cpu": common.CPU_PEERS},
    cell="tflops", summary=conv_summary,
    notes=["op: y = relu(conv2d(x, w, b, stride, padding, dilation 1, groups)); layer = name Cin->Cout "
           "KHxKW/stride pPadding gGroups; shape = the input's (N, C, H, W); x, w (channels_last) and dy "
           "torch.randn, w scaled by 1/sqrt(fan_in) and b by 0.1 so that y is O(1)",
           "GPU layers: the 2012 AlexNet's five convs at batch 128 (groups 2 where the two towers split a "
           "layer); CPU: conv1 and conv2 at batch 32 and 1 (fwd), batch 1 (fwd+bwd)",
           "providers: ours = alexnet_kernels.conv.conv2d_relu(backend='triton') (backward_route='auto': the "
           "faster of its two backward routes, measured once per shape); ours-cuda = backend='cuda' (the CUDA C++ "
           "implicit GEMMs, forward and backward); ours-auto = backend='auto' (the fastest "
           "of 'triton', 'cuda' and 'torch', measured once per shape; the measurements and choices are in the JSON as "
           "auto_choices); ours-bwd-triton / ours-bwd-aten (fwd+bwd only) = backend='triton' with "
           "backward_route='triton' (Triton dgrad + wgrad) / 'aten' (a Triton pass for the ReLU mask and dbias, "
           "then cuDNN's dgrad + wgrad); cudnn = torch.relu(F.conv2d(...)); cudnn-fused = "
           "torch.ops.aten.cudnn_convolution_relu (forward only, no autograd formula); torch-compile = "
           "torch.compile of relu(F.conv2d(...)), mode %r, dynamic=False; ours-cpu = conv2d_relu(backend='auto') "
           "on CPU, where there is no C++ conv kernel and 'auto' delegates to torch's F.conv2d + relu: ours-cpu "
           "and torch-cpu then time the same computation (ours adds the API's dispatch)" % COMPILE_MODE,
           "dtypes: bf16, fp16, and fp32 with torch.backends.cudnn.allow_tf32 = True (torch's default for "
           "convolutions; TF32 tensor cores, labelled 'fp32 (TF32)'); torch.backends.cudnn.benchmark = %s "
           "(BENCH_CUDNN_BENCHMARK)" % CUDNN_BENCHMARK,
           "modes: fwd = relu(conv2d(x, w, b)); fwd+bwd = autograd.grad(relu(conv2d(x, w, b)), (x, w, b), dy) "
           "(dx of conv1 is computed too, as for every layer)",
           "FLOP model (TFLOP/s), the same for every provider: 2 N OH OW Cout (Cin/groups) KH KW per forward "
           "(bias and ReLU not counted), 3x for fwd+bwd; % = TFLOP/s over the bf16 matmul peak measured in the "
           "same session (torch.mm of two 8192x8192 bf16 matrices, do_bench median), for every dtype",
           "correctness (before timing, vs float64 on the same device and rounded inputs): fwd y; fwd+bwd y, then "
           "dx, dw, db against the float64 backward through the provider's own ReLU mask (y > 0); elementwise "
           "|got - ref| <= atol rms(ref) + rtol |ref|, (atol, rtol) = bf16 (1e-2, 2e-2), fp16 (2e-3, 5e-3), "
           "fp32 (TF32) (1e-2, 1e-2), CPU fp32 (1e-4, 1e-4)",
           "peak extra mem (fwd+bwd only): max_memory_allocated during one fwd+bwd minus the memory allocated "
           "before it, over x.nbytes (dx itself counts 1.0); torch-compile in a CUDA-graph mode (max-autotune) "
           "draws from a pool allocated at capture, so its figure reads low",
           "bar (issue 5): the sum over the five layers of fwd+bwd ms, ours vs cudnn >= 1.0x (the summary table "
           "after the GPU cases)",
           common.CPU_PEERS_NOTE % "a two-node ONNX graph Conv (weight and bias as initializers) -> Relu on the "
           "NCHW input"])


# --------------------------------------------------------------------------------------------------
# Providers

def _torch_conv_relu(x, w, b, stride, padding, groups):
    return torch.relu(F.conv2d(x, w, b, stride, padding, 1, groups))


def conv_fn(provider, layer, x):
    """The provider's f(x, w, b)."""
    s, p, g = layer.stride, layer.padding, layer.groups
    if provider in ROUTE_PROVIDERS:
        route = ROUTE_PROVIDERS[provider]
        return lambda t, w, b: conv.conv2d_relu(t, w, b, s, p, 1, g, backend="triton", backward_route=route)
    if provider in OURS_BACKEND:
        backend = OURS_BACKEND[provider]
        return lambda t, w, b: conv.conv2d_relu(t, w, b, s, p, 1, g, backend=backend)
    if provider in ("cudnn", "torch-cpu"):
        return lambda t, w, b: _torch_conv_relu(t, w, b, s, p, g)
    if provider == "cudnn-fused":
        return lambda t, w, b: torch.ops.aten.cudnn_convolution_relu(t, w, b, [s, s], [p, p], [1, 1], g)
    if provider == "torch-compile":
        mode = COMPILE_MODE if x.device.type == "cuda" else CPU_COMPILE_MODE
        f = common.compiled(_torch_conv_relu, (layer.name, tuple(x.shape), x.dtype, LAYOUT, mode), mode=mode)
        return lambda t, w, b: f(t, w, b, s, p, g)
    raise ValueError("unknown provider %r" % (provider,))


def build(fn, mode, x, w, b, dy):
    """The function to time (it returns its output, so the output is freed after each call)."""
    if mode == "fwd":
        return lambda: fn(x, w, b)
    if mode == "fwd+bwd":
        leaves = tuple(t.detach().requires_grad_() for t in (x, w, b))
        return lambda: torch.autograd.grad(fn(*leaves), leaves, dy)
    raise ValueError("unknown mode %r" % (mode,))


def provider_error(provider, device):
    if provider in ROUTE_PROVIDERS and "backward_route" not in inspect.signature(conv.conv2d_relu).parameters:
        return "alexnet_kernels.conv.conv2d_relu takes no backward_route here"
    if OURS_BACKEND.get(provider) == "triton":
        return common.ours_error("triton", device)
    if OURS_BACKEND.get(provider) == "cuda":
        from alexnet_kernels.ops import conv as conv_ops
        return common.ours_error("cuda", device, needs=conv_ops.CUDA_FUNCTIONS)
    if provider == "cudnn" and not torch.backends.cudnn.is_available():
        return "cuDNN is not available to torch here (torch.backends.cudnn.is_available() is False)"
    if provider == "cudnn-fused":
        if not torch.backends.cudnn.is_available():
            return "cuDNN is not available to torch here (torch.backends.cudnn.is_available() is False)"
        if not hasattr(torch.ops.aten, "cudnn_convolution_relu"):
            return "this torch has no aten::cudnn_convolution_relu"
    if provider == "torch-compile":
        return common.torch_compile_error(device)
    return None


def provider_info(provider, x, w):
    """For ours, what the API decided, for the JSON: backend_resolved (ops.conv.BACKENDS.resolve: a concrete
    backend, or "auto" when it is measured on first use) and auto_choices (conv.measured_choices(): the
    "auto" decisions measured in this process for this x and weight shape and dtype: [key, chosen, {candidate:
    ms}]).  Best effort: the fields are left out when the API does not offer them."""
    if provider not in OURS_BACKEND:
        return {}
    info = {}
    try:
        from alexnet_kernels.ops import conv as conv_ops
        info["backend_resolved"] = conv_ops.BACKENDS.resolve(OURS_BACKEND[provider], x, OP)
    except Exception as exc:
        info["backend_resolved"] = "unresolved (%s: %s)" % (type(exc).__name__, exc)
    try:
        choices = conv.measured_choices()
        info["auto_choices"] = [[repr(key), chosen, times] for key, (chosen, times) in choices.items()
                                if tuple(x.shape) in key and tuple(w.shape) in key and x.dtype in key]
    except Exception:
        pass
    return info


# --------------------------------------------------------------------------------------------------
# Inputs and correctness

def make_inputs(layer, dtype, device):
    torch.manual_seed(0)
    x = common.make_input(input_shape(layer), dtype, LAYOUT, device)
    fan_in = (layer.cin // layer.groups) * layer.kernel * layer.kernel
    w = (torch.randn(layer.cout, layer.cin // layer.groups, layer.kernel, layer.kernel, device=device)
         / fan_in ** 0.5).to(dtype).contiguous(memory_format=torch.channels_last)
    b = (0.1 * torch.randn(layer.cout, device=device)).to(dtype)
    oh = output_hw(layer)
    dy = common.make_input((layer.batch, layer.cout, oh, oh), dtype, LAYOUT, device)
    return x, w, b, dy


def _close(name, got, ref, tol):
    """None if got is within tol of the float64 ref (atol scaled by ref's RMS), else a description."""
    if tuple(got.shape) != tuple(ref.shape):
        return "%s: shape %s, expected %s" % (name, tuple(got.shape), tuple(ref.shape))
    atol_rms, rtol = tol
    rms = ref.pow(2).mean().sqrt().item() if ref.numel() else 0.0
    err = common.mismatch(got.detach().double(), ref, atol_rms * max(rms, 1e-30), rtol)
    return None if err is None else "%s: %s (rms of the reference %g)" % (name, err, rms)


def _reference_flags():
    """cuDNN settings of the float64 reference only (the providers run under the benchmark's settings)."""
    return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False)


def check(fn, mode, layer, x, w, b, dy, out, dtype_label):
    """None if the provider is right (see the module docstring), else a description.  fwd: the first call's y;
    fwd+bwd: one more untimed forward + backward, its y and gradients."""
    tol = TOLERANCES[dtype_label]
    s, p, g = layer.stride, layer.padding, layer.groups
    x64, w64, b64 = (t.detach().double() for t in (x, w, b))
    if mode == "fwd":
        with _reference_flags():
            ref = _torch_conv_relu(x64, w64, b64, s, p, g)
        return _close("y", common.first_output(out), ref, tol)
    leaves = tuple(t.detach().requires_grad_() for t in (x, w, b))
    y = fn(*leaves)
    y_saved = y.detach().clone()   # before the backward (a CUDA-graphed output may be reused later)
    grads = torch.autograd.grad(y, leaves, dy)
    del y
    with _reference_flags():
        err = _close("y", y_saved, _torch_conv_relu(x64, w64, b64, s, p, g), tol)
        if err is not None:
            return err
        leaves64 = tuple(t.requires_grad_() for t in (x64, w64, b64))
        pre = F.conv2d(leaves64[0], leaves64[1], leaves64[2], s, p, 1, g)
        ref_grads = torch.autograd.grad(pre, leaves64, dy.double() * (y_saved > 0))
    for name, got, ref in zip(("dx", "dw", "db"), grads, ref_grads):
        err = _close(name, got, ref, tol)
        if err is not None:
            return err
    return None


# --------------------------------------------------------------------------------------------------
# Tests

@pytest.fixture(autouse=True)
def _conv_flags():
    with common.cudnn_conv_flags(CUDNN_BENCHMARK):
        yield


@pytest.fixture(scope="module")
def matmul_peak(gpu):
    """The bf16 matmul peak, measured once per session (the denominator of % in the cells)."""
    return common.gpu_matmul_tflops()


def first_call_or_skip(provider, mode, layer, x, w, b, dy, sync, device, case, ours):
    """common.first_call of the provider's timed function: (fn, out, seconds, the provider's f(x, w, b)).  A
    baseline raising (torch.compile's setup included) is skipped with the error; ours raising
    BackendUnavailableError (a case its kernels do not take) too, any other exception of ours fails."""
    made = {}

    def make():
        made["f"] = conv_fn(provider, layer, x)
        return build(made["f"], mode, x, w, b, dy)

    try:
        fn, out, seconds = common.first_call(make, sync, skip_as=None if ours else (OP, device, case, provider))
    except alexnet_kernels.BackendUnavailableError as exc:
        common.skip(OP, device, case, provider, "BackendUnavailableError: %s" % exc)
    return fn, out, seconds, made["f"]


def case_or_skip(benchmark, row_device, device, mode, layer, label, provider):
    """The case's row fields; names the pytest-benchmark group, and skips a provider that cannot run on `device`.
    row_device: the results' device type ("cuda" or "cpu"; the GPU check's dry run runs the GPU cases on a CPU)."""
    case = {"mode": mode, "layer": layer_label(layer), "shape": common.shape_label(input_shape(layer)),
            "dtype": label, "layout": LAYOUT}
    benchmark.group = "conv2d_relu-%s %s %s %s %s" % (common.DEVICE_TITLES[row_device].lower(), mode, layer.name,
                                                      label, LAYOUT)
    err = provider_error(provider, device)
    if err is not None:
        common.skip(OP, row_device, case, provider, err)
    return case


GPU_PARAMS = [pytest.param(mode, layer, dname, provider,
                           id="%s-%s-%s-%s-%s" % (mode, layer.name, DTYPE_IDS[dname], LAYOUT, provider))
              for mode in MODES for layer in LAYERS for dname in GPU_DTYPES for provider in GPU_PROVIDERS
              if mode == "fwd+bwd" or provider not in ROUTE_PROVIDERS]
CPU_PARAMS = [pytest.param(mode, layer, id="%s-%s-%s-fp32-%s" % (mode, layer.name, common.shape_label(
              input_shape(layer)), LAYOUT)) for mode in MODES for layer in CPU_LAYERS
              if mode == "fwd" or layer.batch == CPU_BWD_BATCH]


@pytest.mark.parametrize("mode,layer,dname,provider", GPU_PARAMS)
def test_conv2d_relu_gpu(benchmark, gpu, matmul_peak, mode, layer, dname, provider):
    dtype, label = common.DTYPES[dname], DTYPE_LABELS[dname]
    case = case_or_skip(benchmark, "cuda", gpu, mode, layer, label, provider)
    ours = provider in OURS

    x, w, b, dy = make_inputs(layer, dtype, gpu)
    torch.cuda.synchronize()
    # first call: autotuning and compilation (Triton, torch.compile), cuDNN's algorithm search
    fn, out, seconds, provider_fn = first_call_or_skip(provider, mode, layer, x, w, b, dy, torch.cuda.synchronize,
                                                       "cuda", case, ours)
    extra = {"first_call_s": seconds}
    common.require_correct(OP, "cuda", case, provider,
                           check(provider_fn, mode, layer, x, w, b, dy, out, label), ours)
    del out
    torch.cuda.empty_cache()   # the check's float64 references: not part of the measurements

    ms, measured = common.measure_gpu(benchmark, fn, x.nbytes if mode == "fwd+bwd" else None)
    extra.update(measured)
    extra.update(allow_tf32=torch.backends.cudnn.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark)
    if provider == "torch-compile":
        extra["compile_mode"] = COMPILE_MODE
    if provider in ROUTE_PROVIDERS:
        extra["backward_route"] = ROUTE_PROVIDERS[provider]
    extra.update(provider_info(provider, x, w))
    common.record(benchmark, OP, "cuda", case, provider, ms, flops=flops(layer, mode), **extra)


@pytest.mark.parametrize("mode,layer", CPU_PARAMS)
def test_conv2d_relu_cpu(benchmark, mode, layer):
    device, label = torch.device("cpu"), "fp32"
    case = {"mode": mode, "layer": layer_label(layer), "shape": common.shape_label(input_shape(layer)),
            "dtype": label, "layout": LAYOUT}
    x, w, b, dy = make_inputs(layer, torch.float32, device)
    conv_fns = {}

    def make(provider):
        def build_torch():
            err = provider_error(provider, device)
            if err is not None:
                return err
            conv_fns[provider] = conv_fn(provider, layer, x)
            return build(conv_fns[provider], mode, x, w, b, dy)
        return common.cpu_provider_fn(provider, mode, build_torch, lambda: common.conv_relu_graph(
            x.shape, w, b, layer.stride, layer.padding, layer.groups), x, dy.shape)

    common.run_cpu_case(benchmark, OP, case, CPU_PROVIDERS, make,
                        lambda provider, out: check(conv_fns.get(provider), mode, layer, x, w, b, dy, out, label),
                        lambda provider: dict(flops=flops(layer, mode), **provider_info(provider, x, w)), ours=OURS)
