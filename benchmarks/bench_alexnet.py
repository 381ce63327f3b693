"""Benchmarks of a whole AlexNet training step (issue 6): the 2012 two-tower net (alexnet.AlexNet) on our kernels
vs torch's, eager and compiled.

    pytest benchmarks/bench_alexnet.py --benchmark-only
    pytest benchmarks/bench_alexnet.py --benchmark-only -k "bf16"               # a subset

One training step: optimizer.zero_grad(set_to_none=True); loss = F.cross_entropy(model(x), target) (under
torch.autocast(bfloat16) for bf16); loss.backward(); optimizer.step() -- SGD lr 0.01, momentum 0.9, weight
decay 5e-4; x torch.randn (N, 3, 227, 227) channels_last, target random labels of 1000 classes, both fixed
(static) tensors; the model in train mode (dropout 0.5 in fc6 and fc7), moved to channels_last.

GPU (test_alexnet_train_step_gpu): batch 128, precision "fp32 (TF32 convs)" (torch's defaults: TF32 for
convolutions, full fp32 matmuls) and "bf16 autocast"; providers
  ours            AlexNet(kernels="ours"), eager
  ours-compile    torch.compile of that model
  ours-cudagraph  the whole step (forward, backward, SGD step) of AlexNet(kernels="ours") captured once in a
                  CUDA graph (torch.cuda.graph, after warm-up steps on a side stream) and replayed
  torch-eager     AlexNet(kernels="torch") (nn.Conv2d, nn.LocalResponseNorm, ...), eager
  torch-compile   torch.compile of that model (mode $BENCH_ALEXNET_COMPILE_MODE, default "default")
CPU (test_alexnet_train_step_cpu): batch 32, fp32, ours-cpu (kernels="ours") vs torch-cpu (kernels="torch") and
torch-compile (torch.compile of kernels="torch"): the first step (the compile included), then CPU_ROUNDS interleaved
rounds of one step each (benchlib/interleave.py), median.
CPU inference (test_alexnet_inference_cpu, op alexnet_inference): batch 32 and 1, fp32, eval; ours-cpu, torch-cpu and
the peers (torch.compile of kernels="torch"; kernels="ours" exported to ONNX by alexnet_kernels.export and run by
onnxruntime and OpenVINO, benchlib/peers.py), interleaved; img/s, vs the best peer.

Metric: images/s = batch / the median step time (GPU: triton.testing.do_bench with warmup 100 ms and rep 500 ms,
after the first call and WARMUP_STEPS more steps; L2 flushed before each timed step), and the peak memory one
step allocates beyond what is allocated before it (parameters, momentum buffers, inputs, gradients): for the
CUDA graph, the peak during the capture (its private pool).  Speed-ups vs torch-compile and torch-eager from
the same run; after the table, the issue's bars.

Correctness before timing: (1) our kernels inside the net -- AlexNet(kernels="ours") and AlexNet(kernels="torch")
with the same (He-style) parameters and dropout off, logits and loss on a few images at the case's precision,
relative L2 error within KERNEL_CHECK_TOL (once per device and precision; it gates every ours-* provider); (2)
every provider's first step: the loss finite and within LOSS_RANGE (random labels: ln(1000) plus the spread of
the logits under the paper's init -- a sanity check against NaN and garbage, not a comparison); after timing, the
loss is still finite.  Ours (eager) failing fails the test; a
baseline, ours-compile or ours-cudagraph that raises or fails the check is skipped with the reason.

Environment:
  BENCH_ALEXNET_COMPILE_MODE=mode  torch.compile's mode for torch-compile and ours-compile (default "default")
  BENCH_CUDNN_BENCHMARK=1|0        torch.backends.cudnn.benchmark (default 1, as in bench_conv.py)
"""
import copy
import gc
import math
import os

import pytest
import torch
import torch.nn.functional as F

import benchlib as common

OP = "alexnet_train_step"
LAYOUT = "channels_last"
IMAGE = 227
NUM_CLASSES = 1000
GPU_BATCH, CPU_BATCH = 128, 32
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
PRECISIONS = ("fp32", "bf16")
PRECISION_LABELS = {"fp32": "fp32 (TF32 convs)", "bf16": "bf16 autocast"}
GPU_PROVIDERS = ("ours", "ours-compile", "ours-cudagraph", "torch-eager", "torch-compile")
CPU_PROVIDERS = ("ours-cpu", "torch-cpu", "torch-compile")
OURS = ("ours", "ours-compile", "ours-cudagraph", "ours-cpu")
MUST_PASS = ("ours", "ours-cpu")   # the others are skipped with the reason when they raise or are wrong
COMPILED = ("ours-compile", "torch-compile")
COMPILE_MODE = os.environ.get("BENCH_ALEXNET_COMPILE_MODE", "default").strip() or "default"
CUDNN_BENCHMARK = os.environ.get("BENCH_CUDNN_BENCHMARK", "1").strip().lower() not in ("0", "false", "no", "off")
DO_BENCH_KWARGS = {"warmup": 100, "rep": 500, "return_mode": "median"}
WARMUP_STEPS = 3
CAPTURE_WARMUP_STEPS = 3
CPU_ROUNDS = 5              # CPU: interleaved rounds of one step each (a batch-32 step takes ~1 s on 2 cores)
INFER_OP = "alexnet_inference"
CPU_INFER_BATCHES = (32, 1)
CPU_INFER_PROVIDERS = ("ours-cpu", "torch-cpu") + common.CPU_PEERS
INFER_TOL = 1e-5   # the project's fp32 tolerance, relative L2 error against float64
KERNEL_CHECK_IMAGES = GPU_BATCH   # the timed shapes: the Triton autotuning and "auto" choices are reused
CPU_KERNEL_CHECK_IMAGES = 2
# relative L2 error of the logits: GPU fp32 has TF32 convolutions; "cpu" = fp32 on the CPU (no TF32)
KERNEL_CHECK_TOL = {"fp32": 1e-2, "bf16": 5e-2, "cpu": 1e-3}
LOSS_RANGE = (0.0, 20.0)   # random labels: ln(1000) = 6.9 plus the logits' spread under the paper's init
# The bars
BAR_BF16_IMG_S = 25000
BAR_BF16_VS_COMPILE = 1.5
BAR_FP32_VS_COMPILE = 1.3


# --------------------------------------------------------------------------------------------------
# The summary: the bars

def _bar_cells(precision, row, compile_row, eager_row):
    """(cells, data) of one ours provider against the bars of its precision."""
    ips = row["items_per_s"]
    vs_compile = compile_row["ms"] / row["ms"] if compile_row else None
    vs_eager = eager_row["ms"] / row["ms"] if eager_row else None
    peak, eager_peak = row.get("peak_mem_gib"), (eager_row or {}).get("peak_mem_gib")
    checks = []
    if precision == PRECISION_LABELS["bf16"]:
        checks.append(("%s img/s >= %s" % (common._fmt_rate(ips), "{:,}".format(BAR_BF16_IMG_S)),
                       ips >= BAR_BF16_IMG_S))
        checks.append(("vs compile >= %.1fx" % BAR_BF16_VS_COMPILE,
                       None if vs_compile is None else vs_compile >= BAR_BF16_VS_COMPILE))
    else:
        checks.append(("vs compile >= %.1fx" % BAR_FP32_VS_COMPILE,
                       None if vs_compile is None else vs_compile >= BAR_FP32_VS_COMPILE))
    checks.append(("peak mem <= eager's", None if peak is None or eager_peak is None else peak <= eager_peak))
    word = {True: "met", False: "not met", None: "unmeasured"}
    bar = "; ".join("%s: %s" % (text, word[ok]) for text, ok in checks)
    cells = [common._fmt_rate(ips),
             "%.2fx" % vs_compile if vs_compile is not None else "—",
             "%.2fx" % vs_eager if vs_eager is not None else "—",
             "%.2f (eager %.2f)" % (peak, eager_peak) if peak is not None and eager_peak is not None
             else ("%.2f" % peak if peak is not None else "—"),
             bar]
    data = {"img_per_s": ips, "vs_torch_compile": vs_compile, "vs_torch_eager": vs_eager, "peak_mem_gib": peak,
            "torch_eager_peak_mem_gib": eager_peak, "bars": {text: ok for text, ok in checks}}
    return cells, data


def alexnet_summary(op, device, c):
    rows = c.rows_of(op, device)
    if not rows or device != "cuda":
        return [], None
    table, data = [], []
    for precision in dict.fromkeys(r["precision"] for r in rows):
        by = {r["provider"]: r for r in rows if r["precision"] == precision}
        for p in ("ours", "ours-compile", "ours-cudagraph"):
            if p not in by:
                continue
            cells, entry = _bar_cells(precision, by[p], by.get("torch-compile"), by.get("torch-eager"))
            table.append([precision, p] + cells)
            entry.update(precision=precision, provider=p)
            data.append(entry)
    if not table:
        return [], None
    header = ["precision", "provider", "img/s", "vs torch-compile", "vs torch-eager", "peak extra mem (GiB)",
              "bars (issue 6; the img/s bar is for an H100)"]
    return ["The issue's bars, per ours provider:", ""] + common.markdown_table(header, table), data


common.register_op(
    OP, title="AlexNet training step",
    case_fields=("batch", "image", "precision", "layout"),
    providers={"cuda": GPU_PROVIDERS, "cpu": CPU_PROVIDERS},
    baselines={"cuda": ("torch-compile", "torch-eager"), "cpu": ("torch-compile", "torch-cpu")},
    cell="rate", rate_unit="img/s", summary=alexnet_summary,
    notes=["model: alexnet.AlexNet(num_classes=1000, dropout=0.5), the 2012 two-tower net (60,965,224 parameters, "
           "the paper's init), both towers on one device, kernels='ours' (alexnet_kernels' fused ops) or 'torch'; "
           "moved to channels_last; train mode",
           "step: zero_grad(set_to_none=True); F.cross_entropy(model(x), target) (bf16: under "
           "torch.autocast(bfloat16, cache_enabled=False)); backward; SGD(lr %g, momentum %g, weight_decay %g) "
           "step (torch's default foreach implementation); x torch.randn (N, 3, 227, 227) channels_last fp32, "
           "target random labels; both static" % (LR, MOMENTUM, WEIGHT_DECAY),
           "precision: 'fp32 (TF32 convs)' = torch's defaults (torch.backends.cudnn.allow_tf32 on, matmuls in "
           "full fp32; our Triton convs follow cudnn.allow_tf32); 'bf16 autocast'; torch.backends.cudnn.benchmark "
           "= %s (BENCH_CUDNN_BENCHMARK)" % CUDNN_BENCHMARK,
           "providers: ours / torch-eager = AlexNet(kernels='ours' / 'torch') eager; ours-compile / torch-compile "
           "= torch.compile(model, mode=%r); ours-cudagraph = the whole step of the kernels='ours' model captured "
           "in one CUDA graph after %d warm-up steps on a side stream (our conv's backend='auto' measurements "
           "happen there), replayed" % (COMPILE_MODE, CAPTURE_WARMUP_STEPS),
           "timing (GPU): triton.testing.do_bench(step, warmup=100, rep=500, return_mode='median') after the first "
           "call (compilation, autotuning, cuDNN's search) and %d more steps; img/s = batch / median; CPU: "
           "%d interleaved rounds of one step after the first step (benchlib/interleave.py), median" % (WARMUP_STEPS,
                                                                                             CPU_ROUNDS),
           "peak extra mem (GiB): max_memory_allocated during one step minus memory_allocated before it (parameters, "
           "momentum buffers, inputs and the previous step's gradients are already allocated); ours-cudagraph: "
           "the peak during the capture over what was allocated before it (the graph's private pool); "
           "peak_mem_total_gib in the JSON is the absolute peak",
           "correctness: AlexNet(kernels='ours') vs AlexNet(kernels='torch'), same He-style parameters, dropout "
           "off, %d images (CPU: %d), logits' relative L2 error <= %s (GPU fp32 with TF32 convolutions, GPU "
           "bf16, CPU fp32); every provider's first step: loss finite and in %s (a sanity check: random labels); "
           "the loss after timing (final_loss in the JSON) finite"
           % (KERNEL_CHECK_IMAGES, CPU_KERNEL_CHECK_IMAGES, KERNEL_CHECK_TOL, LOSS_RANGE),
           "bars (issue 6): bf16 >= %s img/s on an H100 and >= %.1fx torch.compile; fp32 >= %.1fx torch.compile; "
           "peak memory <= torch eager's (the table after the cases)"
           % ("{:,}".format(BAR_BF16_IMG_S), BAR_BF16_VS_COMPILE, BAR_FP32_VS_COMPILE)])


# --------------------------------------------------------------------------------------------------
# Model, step

def alexnet_error():
    """None if alexnet.AlexNet can be imported, else why not."""
    try:
        import alexnet
        alexnet.AlexNet
    except Exception as exc:
        return "alexnet.AlexNet is not importable (%s: %s)" % (type(exc).__name__, exc)
    return None


def new_model(kernels, device, dropout=0.5):
    from alexnet import AlexNet
    torch.manual_seed(0)
    model = AlexNet(num_classes=NUM_CLASSES, kernels=kernels, dropout=dropout)
    return model.to(device).to(memory_format=torch.channels_last).train()


def kernels_of(provider):
    return "ours" if provider in OURS else "torch"


def make_batch(batch, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, IMAGE, IMAGE, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    return x, target


def _autocast(device, precision):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)


def train_step(forward, optimizer, x, target, device, precision):
    """The step function (returns the loss tensor)."""
    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            loss = F.cross_entropy(forward(x), target)
        loss.backward()
        optimizer.step()
        return loss
    return step


def new_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def cudagraph_step(model, optimizer, x, target, device, precision, state):
    """Warm up on a side stream, capture one whole step in a CUDA graph, return a function that replays it and
    returns the static loss.  state["capture_peak_bytes"]: the peak allocated during the capture over what was
    allocated before it."""
    step = train_step(model, optimizer, x, target, device, precision)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(CAPTURE_WARMUP_STEPS):
            step()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)   # the backward allocates .grad from the graph's pool
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.cuda.graph(graph):
        with _autocast(device, precision):
            static_loss = F.cross_entropy(model(x), target)
        static_loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    state["capture_peak_bytes"] = torch.cuda.max_memory_allocated() - before
    state["graph"] = graph

    def replay():
        graph.replay()
        return static_loss
    return replay


def build(provider, model, optimizer, x, target, device, precision, state):
    if provider == "ours-cudagraph":
        return cudagraph_step(model, optimizer, x, target, device, precision, state)
    forward = model
    if provider in COMPILED:
        forward = torch.compile(model, mode=COMPILE_MODE)
    return train_step(forward, optimizer, x, target, device, precision)


# --------------------------------------------------------------------------------------------------
# Correctness

_kernel_checks = {}


def kernel_check(device, precision):
    """None if AlexNet(kernels="ours") computes AlexNet(kernels="torch")'s logits and loss (same parameters,
    dropout off, KERNEL_CHECK_IMAGES images, the precision's autocast), else a description.  Once per device
    and precision."""
    key = (device.type, precision)
    if key not in _kernel_checks:
        from alexnet.model import spread_init_  # as tests/test_alexnet_model.py: no near-ties in pool5
        ours = new_model("ours", device, dropout=0.0)
        spread_init_(ours)
        ref = new_model("torch", device, dropout=0.0)
        ref.load_state_dict(ours.state_dict())
        x, target = make_batch(KERNEL_CHECK_IMAGES if device.type == "cuda" else CPU_KERNEL_CHECK_IMAGES, device)
        results = []
        with torch.no_grad(), _autocast(device, precision):
            for net in (ours, ref):
                logits = net.eval()(x).float()
                results.append((logits, F.cross_entropy(logits, target)))
        (got, got_loss), (want, want_loss) = results
        tol = KERNEL_CHECK_TOL["cpu" if device.type == "cpu" and precision == "fp32" else precision]
        rel = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
        err = None
        if not (math.isfinite(rel) and rel <= tol):
            err = ("AlexNet(kernels='ours') logits differ from kernels='torch' (same parameters, dropout off, %s): "
                   "relative L2 error %g > %g" % (PRECISION_LABELS.get(precision, precision), rel, tol))
        elif not abs(got_loss.item() - want_loss.item()) <= tol * max(1.0, abs(want_loss.item())):
            err = "loss %g vs torch's %g" % (got_loss.item(), want_loss.item())
        _kernel_checks[key] = (err, rel)
        del ours, ref, results
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return _kernel_checks[key]


def loss_error(loss, what):
    """A sanity check of a step's loss (garbage, NaN, divergence): finite and within LOSS_RANGE."""
    value = float(loss.detach().float().item())
    if not (math.isfinite(value) and LOSS_RANGE[0] < value < LOSS_RANGE[1]):
        return "%s: loss %g, expected finite and in (%g, %g) (random labels: ln(%d) = %.2f plus the logits' spread)" % (
            what, value, LOSS_RANGE[0], LOSS_RANGE[1], NUM_CLASSES, math.log(NUM_CLASSES))
    return None


def check_or_skip(provider, device, case, err):
    """Ours eager: a mismatch fails; the other providers are skipped with it."""
    if err is None:
        return
    if provider in MUST_PASS:
        pytest.fail(err)
    common.skip(OP, device, case, provider, "not timed: " + err)


# --------------------------------------------------------------------------------------------------
# Tests

@pytest.fixture(autouse=True)
def _flags():
    with common.cudnn_conv_flags(CUDNN_BENCHMARK):
        yield


def _release(device, compiled):
    gc.collect()
    if compiled:
        torch._dynamo.reset()   # the compiled graphs of this model (nothing else in this file is compiled)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def provider_error(provider):
    err = alexnet_error()
    if err is None and provider in COMPILED:
        err = common.torch_compile_error()
    return err


def step_peak_memory(fn):
    """(extra bytes at the peak of one step, absolute peak bytes, the step's loss)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return peak - before, peak, loss


@pytest.mark.parametrize("dname,provider", [
    pytest.param(dname, provider, id="train-%dx3x%dx%d-%s-%s-%s" % (GPU_BATCH, IMAGE, IMAGE, dname, LAYOUT, provider))
    for dname in PRECISIONS for provider in GPU_PROVIDERS])
def test_alexnet_train_step_gpu(benchmark, gpu, dname, provider):
    case = {"batch": GPU_BATCH, "image": "%dx%d" % (IMAGE, IMAGE), "precision": PRECISION_LABELS[dname],
            "layout": LAYOUT}
    benchmark.group = "alexnet-gpu train step %s" % PRECISION_LABELS[dname]
    err = provider_error(provider)
    if err is not None:
        common.skip(OP, "cuda", case, provider, err)
    if provider in OURS:
        check_or_skip(provider, "cuda", case, kernel_check(gpu, dname)[0])

    state = {}
    try:
        model = new_model(kernels_of(provider), gpu)
        optimizer = new_optimizer(model)
        x, target = make_batch(GPU_BATCH, gpu)
        torch.cuda.synchronize()
        fn, loss, seconds = common.first_call(
            lambda: build(provider, model, optimizer, x, target, gpu, dname, state), torch.cuda.synchronize,
            skip_as=None if provider in MUST_PASS else (OP, "cuda", case, provider))
        check_or_skip(provider, "cuda", case, loss_error(loss, "first step"))
        extra = {"first_call_s": seconds}
        if provider in OURS:
            extra["kernel_check_rel_err"] = kernel_check(gpu, dname)[1]
        for _ in range(WARMUP_STEPS):
            fn()
        torch.cuda.synchronize()
        from triton.testing import do_bench
        ms = float(do_bench(fn, **DO_BENCH_KWARGS))
        extra["host_ms"] = common.host_ms_per_call(fn, calls=5)
        peak, total, loss = step_peak_memory(fn)
        if provider == "ours-cudagraph":
            peak = state["capture_peak_bytes"]
        extra.update(peak_mem_bytes=int(peak), peak_mem_gib=peak / 2 ** 30, peak_mem_total_gib=total / 2 ** 30,
                     final_loss=float(loss.item()))
        if not math.isfinite(extra["final_loss"]):
            check_or_skip(provider, "cuda", case, "the loss after timing is %s" % extra["final_loss"])
        common.gpu_pedantic(benchmark, fn)
        if provider in COMPILED:
            extra["compile_mode"] = COMPILE_MODE
        extra.update(allow_tf32=torch.backends.cudnn.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark)
        common.record(benchmark, OP, "cuda", case, provider, ms, items=GPU_BATCH, **extra)
    finally:
        state.clear()
        model = optimizer = fn = loss = None   # noqa: F841  (free the model, its graphs and buffers)
        _release(gpu, provider in COMPILED)


def test_alexnet_train_step_cpu(benchmark):
    device = torch.device("cpu")
    case = {"batch": CPU_BATCH, "image": "%dx%d" % (IMAGE, IMAGE), "precision": "fp32", "layout": LAYOUT}
    extra = {}
    if any(p in OURS for p in CPU_PROVIDERS):
        err, extra["kernel_check_rel_err"] = kernel_check(device, "fp32")
        check_or_skip("ours-cpu", "cpu", case, err)
    x, target = make_batch(CPU_BATCH, device)

    def make(provider):
        err = provider_error(provider)
        if err is not None:
            return err
        model = new_model(kernels_of(provider), device)
        return build(provider, model, new_optimizer(model), x, target, device, "fp32", {})

    def check(provider, loss):
        return loss_error(loss, "%s first step" % provider)

    common.run_cpu_case(benchmark, OP, case, CPU_PROVIDERS, make, check,
                        lambda provider: dict(items=CPU_BATCH, **(extra if provider in OURS else {})),
                        ours=MUST_PASS, rounds=CPU_ROUNDS)


# --------------------------------------------------------------------------------------------------
# Inference on the CPU, against the peers

common.register_op(
    INFER_OP, title="AlexNet inference",
    case_fields=("batch", "image", "precision", "layout"),
    providers={"cpu": CPU_INFER_PROVIDERS}, baselines={"cpu": ("torch-cpu",)}, peers={"cpu": common.CPU_PEERS},
    cell="rate", rate_unit="img/s",
    notes=["model: alexnet.AlexNet(num_classes=1000), the 2012 two-tower net, eval (dropout off), fp32, the "
           "paper's init from torch.manual_seed(0); x torch.randn (N, 3, 227, 227) NCHW; ours-cpu = "
           "kernels='ours' under torch.inference_mode; torch-cpu = kernels='torch', the same parameters",
           "correctness before timing: every provider's logits within relative L2 error %g of kernels='torch' "
           "in float64 on the same input" % INFER_TOL,
           common.CPU_PEERS_NOTE % "kernels='ours' exported by alexnet_kernels.export.onnx_export (native ONNX "
           "LRN, MaxPool, Conv + Relu; dynamic batch); torch-compile compiles kernels='torch'"])

_inference = {}


def inference_models():
    """(ours, torch) eval models with the same parameters, built once."""
    if "models" not in _inference:
        from alexnet import AlexNet
        torch.manual_seed(0)
        ours = AlexNet(num_classes=NUM_CLASSES, kernels="ours").eval()
        ref = AlexNet(num_classes=NUM_CLASSES, kernels="torch").eval()
        ref.load_state_dict(ours.state_dict())
        _inference["models"] = ours, ref
    return _inference["models"]


def exported_alexnet(tmp_path_factory):
    """kernels='ours' exported to ONNX once per session (a path), or why it cannot be."""
    if "onnx" not in _inference:
        try:
            import alexnet_kernels.export as export
            path = str(tmp_path_factory.mktemp("alexnet-onnx") / "alexnet.onnx")
            export.onnx_export(inference_models()[0], (torch.randn(2, 3, IMAGE, IMAGE),), path)
            _inference["onnx"] = path
        except Exception as exc:
            _inference["onnx"] = "ONNX export failed: %s: %s" % (type(exc).__name__, str(exc).splitlines()[0])
    return _inference["onnx"]


def inference_fn(provider, x, tmp_path_factory):
    """The provider's timed inference on x (returns the logits), or why it cannot run."""
    ours, ref = inference_models()
    if provider in common.ONNX_PEERS:
        err = common.peer_error(provider)
        path = err or exported_alexnet(tmp_path_factory)
        if not path.endswith(".onnx"):
            return path
        return common.onnx_peer_fn(provider, path, x, (x.shape[0], NUM_CLASSES))
    model = ours if provider in OURS else ref
    if provider == "torch-compile":
        model = torch.compile(ref, dynamic=False)   # per batch: the test builds it once per case

    def run():
        with torch.inference_mode():
            return model(x)
    return run


@pytest.mark.parametrize("batch", [pytest.param(b, id="infer-%dx3x%dx%d-fp32-NCHW" % (b, IMAGE, IMAGE))
                                   for b in CPU_INFER_BATCHES])
def test_alexnet_inference_cpu(benchmark, batch, tmp_path_factory):
    case = {"batch": batch, "image": "%dx%d" % (IMAGE, IMAGE), "precision": "fp32", "layout": "NCHW"}
    err = alexnet_error()
    if err is not None:
        common.skip(INFER_OP, "cpu", case, "ours-cpu", err)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 3, IMAGE, IMAGE, generator=g)
    with torch.no_grad():
        want = copy.deepcopy(inference_models()[1]).double()(x.double())

    def check(provider, logits):
        rel = ((logits.double() - want).norm() / want.norm().clamp_min(1e-300)).item()
        if math.isfinite(rel) and rel <= INFER_TOL:
            return None
        return "logits' relative L2 error vs float64 %g > %g" % (rel, INFER_TOL)

    try:
        common.run_cpu_case(benchmark, INFER_OP, case, CPU_INFER_PROVIDERS,
                            lambda provider: inference_fn(provider, x, tmp_path_factory), check,
                            lambda provider: dict(items=batch), ours=("ours-cpu",))
    finally:
        _release(torch.device("cpu"), True)
