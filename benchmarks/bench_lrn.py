"""Benchmarks of cross-channel LRN (AlexNet's: size 5, alpha 1e-4, beta 0.75, k 2).

    pytest benchmarks/bench_lrn.py --benchmark-only
    pytest benchmarks/bench_lrn.py --benchmark-only -k "fwd and 96x55x55 and fp16"   # a subset

GPU (test_lrn_gpu): providers ours-triton, ours-cuda, cudnn, torch-eager, torch-compile, and the previous
backward kernels ours-triton-v1 / ours-cuda-v1 (bwd and fwd+bwd only: the forward is the same kernel); batch 128 x
(96,55,55), (96,27,27), (256,27,27), (256,13,13); fp32/fp16/bf16; NCHW/channels_last; modes
  fwd      y = lrn(x)
  bwd      the backward alone: ours call torch.ops.alexnet_kernels.lrn_backward(dy, x, ...) directly
           (ours-triton-v1: the v1 kernel's entry point, triton_kernels.lrn.lrn_backward_v1);
           the others torch.autograd.grad(y, x, dy, retain_graph=True) on a y computed once, untimed
  fwd+bwd  torch.autograd.grad(lrn(x), x, dy)
CPU (test_lrn_cpu): ours-cpu vs torch-cpu and the peers (benchlib/peers.py: torch-compile, and a one-node ONNX LRN
graph in onnxruntime and OpenVINO, forward only), and ours-cpu-prealloc (the forward only: the same C++ kernel
through its internal entry point into one preallocated output, as the runtimes write theirs -- no fresh output's
page faults), fp32 NCHW, fwd at 32x96x55x55, 1x96x55x55 and 32x256x27x27,
fwd+bwd at 32x96x55x55; all providers of a case timed interleaved (benchlib/interleave.py).
Unavailable providers (extension not built, cuDNN rejecting a dtype, ...) are skipped with the reason.
"""

import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels  # noqa: F401  (registers the alexnet_kernels::lrn_* custom ops)
from alexnet_kernels import _backends, _extension, baselines
from alexnet_kernels.lrn import local_response_norm
from alexnet_kernels.ops import lrn as lrn_ops

import benchlib as common

OP = "lrn"
SIZE, ALPHA, BETA, K = 5, 1e-4, 0.75, 2.0

GPU_BATCH = 128
GPU_SHAPES = ((96, 55, 55), (96, 27, 27), (256, 27, 27), (256, 13, 13))   # (C, H, W)
# CPU: (mode, input shape) -- the batch-32 and batch-1 forward of AlexNet's two LRN layers' shapes, and fwd+bwd.
CPU_CASES = (("fwd", (32, 96, 55, 55)), ("fwd", (1, 96, 55, 55)), ("fwd", (32, 256, 27, 27)),
             ("fwd+bwd", (32, 96, 55, 55)))
DTYPES = common.DTYPES
LAYOUTS = common.LAYOUTS
GPU_MODES = ("fwd", "bwd", "fwd+bwd")
GPU_PROVIDERS = ("ours-triton", "ours-triton-v1", "ours-cuda", "ours-cuda-v1", "cudnn", "torch-eager",
                 "torch-compile")
CPU_PROVIDERS = ("ours-cpu", "ours-cpu-prealloc", "torch-cpu") + common.CPU_PEERS
OURS_BACKEND = {"ours-triton": "triton", "ours-triton-v1": "triton", "ours-cuda": "cuda", "ours-cuda-v1": "cuda",
                "ours-cpu": "cpu", "ours-cpu-prealloc": "cpu"}
# The backward kernel variant each of ours runs (the previous kernels stay until a GPU run decides), each
# through its internal entry point: Triton's triton_kernels.lrn.lrn_backward_v1, CUDA's alexnet_kernels._C's
# lrn_backward_v1 (the ops' launchers pick v2 for AlexNet's window by rule).
VARIANT = {"ours-triton-v1": "v1", "ours-cuda-v1": "v1"}


def v1_backward(provider, dy, x):
    """dx by the v1 backward kernel of `provider`'s backend, with the tensors laid out as the op's backward lays
    them out."""
    layout = lrn_ops.layout_of(x)
    if lrn_ops.layout_of(dy) != layout:
        dy = lrn_ops.empty_in_layout(dy.shape, layout, dy).copy_(dy)
    dx = torch.empty_like(x)
    if OURS_BACKEND[provider] == "triton":
        lrn_ops.triton_lrn().lrn_backward_v1(x, dy, dx, SIZE, ALPHA, BETA, K, layout == lrn_ops.NSC)
    else:
        _extension.load().lrn_backward_v1(*(lrn_ops.as_ncs_view(t, layout) for t in (x, dy, dx)), SIZE, ALPHA,
                                          BETA, K, layout == lrn_ops.NSC)
    return dx


def v1_function(provider):
    """ours-*-v1 with autograd: our forward of that backend, the backward by its v1 kernel (x saved, as the op)."""
    backend = OURS_BACKEND[provider]

    class V1LRN(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.ops.alexnet_kernels.lrn_forward(x, SIZE, ALPHA, BETA, K, backend)

        @staticmethod
        def backward(ctx, dy):
            (x,) = ctx.saved_tensors
            return v1_backward(provider, dy, x)

    return V1LRN.apply

# Traffic in input-sized tensors, as cuDNN moves them, for every provider (comparable GB/s):
# fwd reads x, writes y; bwd reads x, y, dy, writes dx; fwd+bwd both.
TRAFFIC = {"fwd": 2, "bwd": 4, "fwd+bwd": 6}
# Ours' own minimum: the backward reads x and dy only (it recomputes the normaliser from x).
OURS_MIN_TRAFFIC = {"fwd": 2, "bwd": 3, "fwd+bwd": 5}

common.register_op(
    OP, title="LRN",
    case_fields=("mode", "shape", "dtype", "layout"),
    providers={"cuda": GPU_PROVIDERS, "cpu": CPU_PROVIDERS},
    baselines={"cuda": ("cudnn", "torch-eager"), "cpu": ("torch-cpu",)}, peers={"cpu": common.CPU_PEERS},
    notes=["LRN parameters: size %d, alpha %g, beta %g, k %g; inputs torch.randn" % (SIZE, ALPHA, BETA, K),
           "modes: fwd = y = lrn(x); bwd = the backward alone (ours: the lrn_backward op; others: "
           "autograd.grad(y, x, dy, retain_graph=True) on a y computed outside the timing); "
           "fwd+bwd = autograd.grad(lrn(x), x, dy)",
           "traffic model (GB/s, % of copy), the same for every provider: fwd 2 tensors (x, y), bwd 4 as "
           "cuDNN moves them (x, y, dy, dx), fwd+bwd 6; ours' real minimum (bwd 3: x, dy, dx; fwd+bwd 5) "
           "is in the JSON as gbps_min_traffic / pct_of_copy_min_traffic",
           "peak extra mem (fwd+bwd only): max_memory_allocated during one fwd+bwd minus the memory "
           "allocated before it (x and dy preallocated), over x.nbytes; dx itself counts 1.0",
           "torch-compile: torch.compile(F.local_response_norm, dynamic=False), compiled once per (shape, "
           "dtype, layout) and reused across modes (an inference and a training graph)",
           "ours-cpu-prealloc: the forward of ours-cpu's C++ kernel into one output preallocated once and "
           "reused (alexnet_kernels._C.lrn_forward), as the runtimes run: the public API (ours-cpu) allocates a "
           "fresh output per call, and a fresh output larger than glibc's 32 MiB mmap threshold is faulted in "
           "anew each call (2 MiB pages where the kernel can have them)",
           common.CPU_PEERS_NOTE % "a one-node ONNX LRN graph (size %d, alpha %g, beta %g, bias %g)"
           % (SIZE, ALPHA, BETA, K)])


def _torch_lrn(t):
    return F.local_response_norm(t, SIZE, ALPHA, BETA, K)


def forward_fn(provider, x, layout):
    if provider in VARIANT:
        return v1_function(provider)
    if provider in OURS_BACKEND:
        backend = OURS_BACKEND[provider]
        return lambda t: local_response_norm(t, SIZE, ALPHA, BETA, K, backend=backend)
    if provider == "cudnn":
        return lambda t: baselines.cudnn_lrn(t, SIZE, ALPHA, BETA, K)
    return common.torch_fn_of(provider, _torch_lrn, (tuple(x.shape), x.dtype, layout, x.device.type))


def prealloc_forward(mode, x):
    """ours-cpu-prealloc: the C++ CPU forward into one output allocated here, reused by every call (as the
    runtimes reuse theirs), or why the mode has none."""
    if mode != "fwd":
        return "into a preallocated output: the forward only (autograd allocates the gradients)"
    y = torch.empty_like(x)
    ext, (N, C) = _extension.load(), x.shape[:2]

    def run():
        ext.lrn_forward(x.view(N, C, -1), y.view(N, C, -1), SIZE, ALPHA, BETA, K, False)
        return y
    return run


def build(provider, mode, x, dy, layout):
    """The function to time (it returns its output, so the output is freed after each call)."""
    if provider == "ours-cpu-prealloc":
        return prealloc_forward(mode, x)
    if mode == "bwd" and provider in VARIANT:
        return lambda: v1_backward(provider, dy, x)
    if mode == "bwd" and provider in OURS_BACKEND:
        backend = OURS_BACKEND[provider]
        return lambda: torch.ops.alexnet_kernels.lrn_backward(dy, x, SIZE, ALPHA, BETA, K, backend)
    return common.autograd_timed_fn(mode, forward_fn(provider, x, layout), x, dy)


def check_against_eager(provider, mode, x, dy, out):
    """None if the provider's first output (y, or dx for bwd and fwd+bwd) matches torch eager computed in
    fp32, else a description of the mismatch.  Timing a wrong result would be meaningless."""
    xf = x.detach().float().requires_grad_(mode != "fwd")
    ref = _torch_lrn(xf)
    if mode != "fwd":
        ref = torch.autograd.grad(ref, xf, dy.float())[0]
    err = common.mismatch(common.first_output(out).float(), ref, *common.TOLERANCES[x.dtype])
    return None if err is None else "%s %s result differs from torch eager (fp32): %s" % (provider, mode, err)


def row_fields(provider, mode, x, dy, layout):
    """record()'s keywords for one row: the traffic model in x-sized tensors, and ours' own minimum."""
    return dict(tensor_bytes=x.nbytes, tensors=TRAFFIC[mode],
                min_tensors=OURS_MIN_TRAFFIC[mode] if provider in OURS_BACKEND else None)


CPU = torch.device("cpu")
BENCH = common.OpBench(OP, lambda shape: shape, build, check_against_eager, row_fields, tuple(OURS_BACKEND))


_cudnn_probe = {}


def cudnn_error(dtype, layout, device):
    """None if the cuDNN baseline runs on this dtype and layout, else why not (probed once on a small
    tensor: cuDNN's legacy LRN API may reject bf16, a limitation of the baseline, not a failure)."""
    key = (dtype, layout)
    if key not in _cudnn_probe:
        small = common.make_input((2, 8, 5, 5), dtype, layout, device)
        err = baselines.cudnn_lrn_error(small)
        if err is None:
            try:
                small.requires_grad_()
                y = baselines.cudnn_lrn(small, SIZE, ALPHA, BETA, K)
                torch.autograd.grad(y, small, torch.randn_like(y))
                torch.cuda.synchronize()
            except Exception as exc:
                err = "cuDNN LRN fails on %s %s: %s: %s" % (str(dtype).replace("torch.", ""), layout,
                                                             type(exc).__name__, str(exc).splitlines()[0])
        _cudnn_probe[key] = err
    return _cudnn_probe[key]


# Cases that crash the process (which would take every later case down with it), observed on the
# GPU machine: skipped with the reason unless BENCH_RUN_KNOWN_BAD=1.
KNOWN_BAD = {
    ("torch-compile", (128, 96, 55, 55), torch.float32, "channels_last"):
        "torch.compile's kernel reads out of bounds on this case (seen with torch 2.11.0+cu130 / "
        "triton 3.6.0 on an H100: NaN output, or 'CUDA error: an illegal memory access' that kills the "
        "process); BENCH_RUN_KNOWN_BAD=1 runs it anyway",
}


def known_bad(provider, shape, dtype, layout):
    return common.known_bad(KNOWN_BAD, (provider, tuple(shape), dtype, layout))


def provider_error(provider, dtype, layout, device):
    if provider in OURS_BACKEND:
        return _backends.backend_error(OURS_BACKEND[provider], device)
    if provider == "cudnn":
        return cudnn_error(dtype, layout, device)
    if provider == "torch-compile":
        return common.torch_compile_error(device)
    return None


@pytest.mark.parametrize("mode,chw,dname,layout,provider", common.gpu_params(GPU_MODES, GPU_SHAPES, GPU_PROVIDERS))
def test_lrn_gpu(benchmark, gpu, mode, chw, dname, layout, provider):
    shape, dtype = (GPU_BATCH,) + tuple(chw), DTYPES[dname]
    case = common.case_of(mode, shape, dname, layout)
    err = known_bad(provider, shape, dtype, layout) or provider_error(provider, dtype, layout, gpu)
    if err is None and provider in VARIANT and mode == "fwd":
        err = "%s differs from %s only in the backward kernel" % (provider, provider[:-3])
    common.begin_case(benchmark, OP, "cuda", case, provider, err)
    common.run_op_gpu_case(benchmark, BENCH, mode, shape, dtype, layout, provider, case, gpu)


@pytest.mark.parametrize("mode,shape", common.cpu_params(CPU_CASES))
def test_lrn_cpu(benchmark, mode, shape):
    common.run_op_cpu_case(benchmark, BENCH, mode, shape, CPU_PROVIDERS,
                           lambda provider: provider_error(provider, torch.float32, "NCHW", CPU),
                           lambda: common.lrn_graph(shape, SIZE, ALPHA, BETA, K))
