"""Benchmarks of counter-based (Philox) dropout and the fused bias + ReLU + dropout (AlexNet's FC epilogue),
p = 0.5, on row-major (M, N) activations.

    pytest benchmarks/bench_dropout.py --benchmark-only
    pytest benchmarks/bench_dropout.py --benchmark-only -k "fwd+bwd and 128x4096 and fp16"   # a subset

GPU (test_dropout_gpu, test_bias_relu_dropout_gpu): (M, N) = 128x9216, 128x4096 (AlexNet's FC inputs) and
8192x4096 (bandwidth-sized); fp32/fp16/bf16; modes
  fwd      y = op(x)
  fwd+bwd  torch.autograd.grad(op(x), x, dy)  (bias_relu_dropout: grad with respect to (x, bias))
providers
  dropout            ours-triton, ours-cuda (dropout.dropout(backend=...)), torch-eager (F.dropout),
                     torch-compile (torch.compile of F.dropout)
  bias_relu_dropout  ours-triton, ours-cuda (dropout.bias_relu_dropout(backend=...)), torch-eager
                     (F.dropout(torch.relu(x + b)), unfused), torch-compile (torch.compile of that chain)
Our backend "torch" (a slow pure-torch reference of the Philox mask) is not benchmarked.
CPU (test_dropout_cpu, test_bias_relu_dropout_cpu): ours-cpu vs torch-cpu, 2048x4096 fp32, fwd and fwd+bwd.

Our masks are not torch's (Philox of (seed, element index)), so results are checked by statistics and
structure, not value by value: every element of y is 0 or the kept value (x / (1-p), resp. relu(x + b) /
(1-p)), the keep rate is within 6 sigma of the binomial's, and the gradients follow the forward's own mask
(from one untimed forward + backward of the same provider).  Unavailable providers (extension not built or
built before the dropout kernels, ...) are skipped with the reason, and so is a baseline whose first call
raises or whose result is wrong; ours raising or computing a wrong result fails.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels  # noqa: F401  (registers the alexnet_kernels::dropout_* custom ops)
from alexnet_kernels import dropout as dr

import benchlib as common

DROPOUT, BIAS_RELU = "dropout", "bias_relu_dropout"
OPS = (DROPOUT, BIAS_RELU)
P = 0.5
SCALE = 1.0 / (1.0 - P)
RATE_SIGMAS = 6   # the keep rate must lie within this many binomial standard deviations of 1 - p

LAYOUT = "row-major"
LAYOUTS = (LAYOUT,)
GPU_SHAPES = ((128, 9216), (128, 4096), (8192, 4096))   # (M, N)
CPU_SHAPE = (2048, 4096)
GPU_MODES = ("fwd", "fwd+bwd")
CPU_MODES = ("fwd", "fwd+bwd")
GPU_PROVIDERS = ("ours-triton", "ours-cuda", "torch-eager", "torch-compile")
CPU_PROVIDERS = ("ours-cpu", "torch-cpu")
OURS_BACKEND = {"ours-triton": "triton", "ours-cuda": "cuda", "ours-cpu": "cpu"}   # through the public API
OURS = tuple(OURS_BACKEND)
EXT_FUNCTIONS = {DROPOUT: ("dropout_forward",),   # what the C++ backends need in _C (the backward reuses it)
                 BIAS_RELU: ("bias_relu_dropout_forward", "bias_relu_dropout_backward")}
SHORT_NAMES = {"ours-triton": "triton", "ours-cuda": "cuda", "torch-eager": "eager", "torch-compile": "compile",
               "ours-cpu": "ours", "torch-cpu": "torch"}

_COMMON_NOTES = [
    "p = %g (inverted dropout: kept elements scaled by 1/(1-p) = %g); inputs torch.randn, row-major (M, N); "
    "shape = (M, N): 128x9216 and 128x4096 are AlexNet's FC activations (batch 128), 8192x4096 is "
    "bandwidth-sized" % (P, SCALE),
    "masks: ours are Philox-4x32-10 of (a 64-bit seed drawn from torch's generator, the element index), not "
    "torch's stream: correctness is checked by structure and statistics (first call, and one untimed forward "
    "+ backward of the same provider for fwd+bwd): every element is 0 or the kept value -- bit-exact for "
    "ours (fp32 math rounded once to the dtype), within (atol, rtol) = fp32 (1e-4, 1e-4), fp16 (1e-2, 1e-2), "
    "bf16 (5e-2, 2e-2) for the baselines --, the keep rate within %d sigma of binomial(n, 1-p), and the "
    "gradient follows the forward's own mask" % RATE_SIGMAS,
    "torch-compile: torch.compile(dynamic=False) of the torch function, compiled once per (shape, dtype) and "
    "reused across modes (an inference and a training graph); our backend 'torch' (a pure-torch reference of "
    "the Philox mask) is not benchmarked",
    "peak extra mem (fwd+bwd only): max_memory_allocated during one fwd+bwd minus the memory allocated before "
    "it (x, dy (and bias) preallocated), over x.nbytes; dx itself counts 1.0",
    "saved for bwd (fwd+bwd rows): the tensors autograd keeps from one forward, measured with "
    "torch.autograd.graph.saved_tensors_hooks (numel * element_size, deduplicated by data_ptr), over x.nbytes "
    "(saved_bytes in the JSON); ours keep no mask (the backward regenerates it from the seed)",
]

# The two ops share their cases, providers and baselines.
_CASES_AND_PROVIDERS = dict(case_fields=("mode", "shape", "dtype", "layout"),
                            providers={"cuda": GPU_PROVIDERS, "cpu": CPU_PROVIDERS},
                            baselines={"cuda": ("torch-eager", "torch-compile"), "cpu": ("torch-cpu",)},
                            short_names=SHORT_NAMES)

common.register_op(
    DROPOUT, title="dropout", **_CASES_AND_PROVIDERS,
    notes=["op: y = dropout(x, p) (ours: alexnet_kernels.dropout.dropout(backend=...); torch: F.dropout)"]
    + _COMMON_NOTES + [
        "modes: fwd = y = dropout(x); fwd+bwd = autograd.grad(dropout(x), x, dy)",
        "traffic model (GB/s, % of copy), in bytes, the same for every provider: fwd = x + y, fwd+bwd = x + y "
        "+ dy + dx; that is also ours' real traffic (plus the 8-byte seed).  Not counted: torch's mask, 1 B "
        "per element (bool), written by the forward and read by the backward (fwd+bwd: + 2 B per element)",
        "saved for bwd: ours the 8-byte seed; torch its mask (on CUDA a bool, 1 B per element; torch's CPU "
        "dropout keeps a mask of x's dtype)",
        "bar (issue): fwd+bwd >= 1.3x torch at 8192x4096 and no slower than torch at AlexNet's shapes "
        "(128x9216, 128x4096); saved-for-backward mask memory 0 bytes (torch: 1 B per element)"])

common.register_op(
    BIAS_RELU, title="bias + ReLU + dropout", **_CASES_AND_PROVIDERS,
    notes=["op: y = dropout(relu(x + bias), p), bias (N,) torch.randn (ours: one kernel each way, "
           "alexnet_kernels.dropout.bias_relu_dropout(backend=...); torch-eager / torch-cpu: the unfused "
           "F.dropout(torch.relu(x + bias)); torch-compile: torch.compile of that chain)"]
    + _COMMON_NOTES + [
        "modes: fwd = y = op(x, bias); fwd+bwd = autograd.grad(op(x, bias), (x, bias), dy): dx and dbias",
        "traffic model (GB/s, % of copy), in bytes, the same for every provider: fwd = x + y + bias, fwd+bwd "
        "= fwd + dy + y + dx + dbias (the backward reads the saved y for the ReLU condition); that is also "
        "ours' real traffic (plus the 8-byte seed).  Not counted: torch's mask, 1 B per element (bool), "
        "written by the forward and read by the backward, and the unfused chain's intermediates (x + b, "
        "relu's output)",
        "correctness of dbias: against the fp64 column sums of the expected dx, within (atol, rtol) of the "
        "dtype plus sqrt(M) * eps(fp32) * the column's sum of |dx| (fp32 summation order)",
        "saved for bwd: ours y (the ReLU condition) + the 8-byte seed; torch eager relu's output + its mask "
        "(on CUDA a bool, 1 B per element; on CPU x's dtype)",
        "bar (issue): fwd+bwd >= 2x the unfused torch chain (torch-eager) at 128x4096 and 128x9216, and >= "
        "torch-compile; saved-for-backward mask memory 0 bytes (torch: 1 B per element)"])


# --------------------------------------------------------------------------------------------------
# Providers

def _torch_dropout(t):
    return F.dropout(t, P, training=True)


def _torch_bias_relu_dropout(t, b):
    return F.dropout(torch.relu(t + b), P, training=True)


def forward_fn(op, provider, x):
    """The provider's forward: f(x) for dropout, f(x, bias) for bias_relu_dropout."""
    if provider in OURS_BACKEND:
        backend = OURS_BACKEND[provider]
        if op == DROPOUT:
            return lambda t: dr.dropout(t, P, True, backend=backend)
        return lambda t, b: dr.bias_relu_dropout(t, b, P, True, backend=backend)
    torch_fn = _torch_dropout if op == DROPOUT else _torch_bias_relu_dropout
    return common.torch_fn_of(provider, torch_fn, (tuple(x.shape), x.dtype, x.device.type))


def op_inputs(op, x, bias):
    return (x,) if op == DROPOUT else (x, bias)


def build(op, provider, mode, x, bias, dy):
    """The function to time (it returns its output, so the output is freed after each call)."""
    if mode not in ("fwd", "fwd+bwd"):
        raise ValueError("unknown mode %r" % (mode,))
    return common.autograd_timed_fn(mode, forward_fn(op, provider, x), op_inputs(op, x, bias), dy)


def provider_error(op, provider, device):
    if provider in OURS_BACKEND:
        return common.ours_error(OURS_BACKEND[provider], device, EXT_FUNCTIONS[op])
    if provider == "torch-compile":
        return common.torch_compile_error()
    return None


# --------------------------------------------------------------------------------------------------
# Correctness: structure and statistics (our masks are not torch's)

def masked_structure_error(got, full, exact, rate=True, p=P):
    """None if every element of `got` is 0 or equals `full` (the value had the element been kept: bit for
    bit when exact, else within the dtype's TOLERANCES) and, when rate, the share of kept elements among
    those where full != 0 is within RATE_SIGMAS sigma of binomial(n, 1 - p); else a description."""
    if got.shape != full.shape or got.dtype != full.dtype:
        return "dtype/shape %s %s, expected %s %s" % (got.dtype, tuple(got.shape), full.dtype, tuple(full.shape))
    dropped = got == 0
    if exact:
        err = common.exact_mismatch(got.masked_fill(dropped, 0), full.masked_fill(dropped, 0))
    else:
        err = common.mismatch(got.float(), full.float(), *common.TOLERANCES[got.dtype], ignore=dropped)
    if err is not None:
        return "elements neither 0 nor the kept value: " + err
    if not rate:
        return None
    candidates = full != 0
    n = int(candidates.sum())
    if n == 0:
        return None
    kept = int((candidates & ~dropped).sum())
    expected, sigma = n * (1.0 - p), math.sqrt(n * p * (1.0 - p))
    if abs(kept - expected) > RATE_SIGMAS * max(sigma, 0.5):
        return ("keep rate %.5f (%d of %d) is %.1f sigma from 1 - p = %g"
                % (kept / n, kept, n, abs(kept - expected) / max(sigma, 1e-30), 1.0 - p))
    return None


def _kept_value(t, dtype):
    """t (any float dtype) * 1/(1-p), computed in fp32 (fp64 for fp64) and rounded once to dtype."""
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return (t.to(acc) * SCALE).to(dtype)


def _bias_relu_full(x, bias):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return _kept_value(torch.relu(x.to(acc) + bias.to(acc)), x.dtype)


def forward_error(op, x, bias, y, exact):
    if op == DROPOUT:
        err = masked_structure_error(y, _kept_value(x, x.dtype), exact)
    else:
        err = masked_structure_error(y, _bias_relu_full(x, bias), exact)
    return None if err is None else "forward: " + err


def dbias_error(db, expected_dpre, dtype):
    """db against the fp64 column sums of expected_dpre (fp64), tolerance of the dtype + fp32 summation."""
    if db.shape != expected_dpre.shape[1:] or db.dtype != dtype:
        return "dbias dtype/shape %s %s, expected %s %s" % (db.dtype, tuple(db.shape), dtype,
                                                           tuple(expected_dpre.shape[1:]))
    ref = expected_dpre.sum(0)
    atol, rtol = common.TOLERANCES[dtype]
    bound = (atol + rtol * ref.abs()
             + math.sqrt(expected_dpre.shape[0]) * torch.finfo(torch.float32).eps * expected_dpre.abs().sum(0))
    err = (db.double() - ref).abs().nan_to_num(float("inf"))
    bad = err > bound
    if not bool(bad.any()):
        return None
    return ("dbias: %d of %d columns off, max abs error %g (bound there %g)"
            % (int(bad.sum()), bad.numel(), err.max().item(), bound[err.argmax()].item()))


def backward_error(op, provider, x, bias, dy, exact):
    """One untimed forward + backward of the provider: y checked as in fwd, dx (and dbias) against the
    forward's own mask (read from y).  None, or a description."""
    fwd = forward_fn(op, provider, x)
    leaves = tuple(t.detach().requires_grad_() for t in op_inputs(op, x, bias))
    y = fwd(*leaves)
    grads = torch.autograd.grad(y, leaves, dy)
    y = y.detach()
    err = forward_error(op, x, bias, y, exact)
    if err is not None:
        return err
    dx = grads[0]
    if op == DROPOUT:
        # dx = dy / (1-p) where the forward kept the element, else 0 -- where x != 0 (a kept 0 reads as dropped)
        expected = torch.where(y != 0, _kept_value(dy, dy.dtype), torch.zeros((), dtype=dy.dtype, device=dy.device))
        ignore = x == 0
    else:
        # d(pre) = dy / (1-p) where y > 0 (kept and relu passing), else 0
        expected = torch.where(y > 0, _kept_value(dy, dy.dtype), torch.zeros((), dtype=dy.dtype, device=dy.device))
        ignore = None
    if exact:
        err = common.exact_mismatch(dx if ignore is None else dx.masked_fill(ignore, 0),
                                    expected if ignore is None else expected.masked_fill(ignore, 0))
    else:
        err = common.mismatch(dx.float(), expected.float(), *common.TOLERANCES[dx.dtype], ignore=ignore)
    if err is not None:
        return "dx vs dy / (1-p) on the forward's mask: " + err
    if op == BIAS_RELU:
        dpre = torch.where(y > 0, dy.double() * SCALE, torch.zeros((), dtype=torch.float64, device=dy.device))
        return dbias_error(grads[1], dpre, dy.dtype)
    return None


def check(op, provider, mode, x, bias, dy, out):
    """None if the provider's first output and (fwd+bwd) one more untimed forward + backward are right by
    structure and statistics, else a description.  Timing a wrong result would be meaningless."""
    exact = provider in OURS
    if mode == "fwd":
        err = forward_error(op, x, bias, common.first_output(out), exact)
    else:
        # the first call's dx: 0 or dy / (1-p) elementwise (dropout: at the keep rate too)
        err = masked_structure_error(common.first_output(out), _kept_value(dy, dy.dtype), exact,
                                     rate=op == DROPOUT)
        err = "first call's dx: " + err if err is not None else backward_error(op, provider, x, bias, dy, exact)
    return None if err is None else "%s %s %s: %s" % (provider, op, mode, err)


# --------------------------------------------------------------------------------------------------
# Traffic, memory

def traffic(op, mode, x, bias):
    """Bytes of the common traffic model (see the notes); the same for every provider."""
    t = x.nbytes
    if op == DROPOUT:
        return {"fwd": 2 * t, "fwd+bwd": 4 * t}[mode]            # x + y (+ dy + dx)
    b = bias.nbytes
    return {"fwd": 2 * t + b, "fwd+bwd": 5 * t + 2 * b}[mode]    # x + y + b (+ dy + y + dx + db)


def saved_for_backward(op, provider, x, bias):
    """What autograd keeps from one forward of the provider (fwd+bwd rows), measured by hooks."""
    fwd = forward_fn(op, provider, x)
    leaves = tuple(t.detach().requires_grad_() for t in op_inputs(op, x, bias))
    saved = common.saved_tensor_bytes(lambda: fwd(*leaves), leaves[0])
    saved["saved_x"] = saved["saved_bytes"] / x.nbytes
    return saved


def make_inputs(shape, dtype, device):
    torch.manual_seed(0)
    x = torch.randn(shape, device=device, dtype=dtype)
    bias = torch.randn(shape[-1], device=device, dtype=dtype)
    dy = torch.randn(shape, device=device, dtype=dtype)
    return x, bias, dy


# --------------------------------------------------------------------------------------------------
# Tests

def run_gpu(benchmark, op, gpu, mode, shape, dname, layout, provider):
    dtype = common.DTYPES[dname]
    case = {"mode": mode, "shape": common.shape_label(shape), "dtype": dname, "layout": layout}
    common.begin_case(benchmark, op, "cuda", case, provider, provider_error(op, provider, gpu))

    x, bias, dy = make_inputs(shape, dtype, gpu)
    torch.cuda.synchronize()
    # first call: compilation (torch-compile, Triton), ...; a baseline that raises is skipped
    fn, seconds = common.checked_first_call(op, "cuda", case, provider, lambda: build(op, provider, mode, x, bias, dy),
                                            lambda out: check(op, provider, mode, x, bias, dy, out),
                                            provider in OURS, torch.cuda.synchronize)
    extra = {"first_call_s": seconds}
    torch.cuda.empty_cache()   # the check's references: not part of the measurements

    ms, measured = common.measure_gpu(benchmark, fn, x.nbytes if mode == "fwd+bwd" else None)
    extra.update(measured)
    if mode == "fwd+bwd":
        extra.update(saved_for_backward(op, provider, x, bias))
    common.record(benchmark, op, "cuda", case, provider, ms, traffic_bytes=traffic(op, mode, x, bias), **extra)


def run_cpu(benchmark, op, mode, provider):
    device = torch.device("cpu")
    case = {"mode": mode, "shape": common.shape_label(CPU_SHAPE), "dtype": "fp32", "layout": LAYOUT}
    common.begin_case(benchmark, op, "cpu", case, provider, provider_error(op, provider, device))

    x, bias, dy = make_inputs(CPU_SHAPE, torch.float32, device)
    fn, _ = common.checked_first_call(op, "cpu", case, provider, lambda: build(op, provider, mode, x, bias, dy),
                                      lambda out: check(op, provider, mode, x, bias, dy, out), provider in OURS)
    benchmark(fn)
    ms = common.cpu_median_ms(benchmark, fn)
    extra = saved_for_backward(op, provider, x, bias) if mode == "fwd+bwd" else {}
    common.record(benchmark, op, "cpu", case, provider, ms, traffic_bytes=traffic(op, mode, x, bias), **extra)


GPU_PARAMS = common.gpu_params(GPU_MODES, GPU_SHAPES, GPU_PROVIDERS, LAYOUTS)
CPU_PARAMS = [pytest.param(mode, provider, id="%s-%s-fp32-%s-%s" % (mode, common.shape_label(CPU_SHAPE), LAYOUT,
                                                                     provider))
              for mode in CPU_MODES for provider in CPU_PROVIDERS]


@pytest.mark.parametrize("mode,shape,dname,layout,provider", GPU_PARAMS)
def test_dropout_gpu(benchmark, gpu, mode, shape, dname, layout, provider):
    run_gpu(benchmark, DROPOUT, gpu, mode, shape, dname, layout, provider)


@pytest.mark.parametrize("mode,shape,dname,layout,provider", GPU_PARAMS)
def test_bias_relu_dropout_gpu(benchmark, gpu, mode, shape, dname, layout, provider):
    run_gpu(benchmark, BIAS_RELU, gpu, mode, shape, dname, layout, provider)


@pytest.mark.parametrize("mode,provider", CPU_PARAMS)
def test_dropout_cpu(benchmark, mode, provider):
    run_cpu(benchmark, DROPOUT, mode, provider)


@pytest.mark.parametrize("mode,provider", CPU_PARAMS)
def test_bias_relu_dropout_cpu(benchmark, mode, provider):
    run_cpu(benchmark, BIAS_RELU, mode, provider)
