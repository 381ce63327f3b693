"""Benchmarks of 2-D max-pooling (AlexNet's: kernel 3, stride 2, padding 0).

    pytest benchmarks/bench_pool.py --benchmark-only
    pytest benchmarks/bench_pool.py --benchmark-only -k "fwd and 96x55x55 and fp16"   # a subset

GPU (test_max_pool2d_gpu): providers ours-triton, ours-cuda, ours-triton-recompute (the benchmark-only
Triton variant that saves x instead of the offsets and re-derives each arg-max in the backward),
torch-eager (F.max_pool2d), torch-compile; batch 128 x (96,55,55), (256,27,27), (256,13,13);
fp32/fp16/bf16; NCHW/channels_last; modes
  fwd      y = max_pool2d(x)
  bwd      the backward alone: ours call torch.ops.alexnet_kernels.max_pool2d_backward(dy, offsets, ...)
           directly (offsets from one forward, untimed), ours-triton-recompute its backward kernel on
           (x, dy); the others torch.autograd.grad(y, x, dy, retain_graph=True) on a y computed once, untimed
  fwd+bwd  torch.autograd.grad(max_pool2d(x), x, dy)
CPU (test_max_pool2d_cpu): ours-cpu vs torch-cpu and the peers (benchlib/peers.py: torch-compile, and a one-node
ONNX MaxPool in onnxruntime and OpenVINO, forward only), fp32 NCHW, fwd at 32x96x55x55 and 1x96x55x55, fwd+bwd at
32x96x55x55; all providers of a case timed interleaved (benchlib/interleave.py).
Unavailable providers (extension not built or built before the pool kernels, ...) are skipped with the
reason, and so is a baseline whose first call raises; ours raising or computing a wrong result fails.
"""
import pytest
import torch
import torch.nn.functional as F

import alexnet_kernels  # noqa: F401  (registers the alexnet_kernels::max_pool2d_* custom ops)
from alexnet_kernels import pool
from alexnet_kernels.ops.lrn import empty_in_layout
from alexnet_kernels.ops.pool import output_hw, pool_layout, triton_pool

import benchlib as common

OP = "max_pool2d"
KERNEL, STRIDE, PADDING = 3, 2, 0
KERNEL2, STRIDE2, PADDING2 = [KERNEL] * 2, [STRIDE] * 2, [PADDING] * 2   # the custom ops' list arguments

GPU_BATCH = 128
GPU_SHAPES = ((96, 55, 55), (256, 27, 27), (256, 13, 13))   # (C, H, W)
CPU_CASES = (("fwd", (32, 96, 55, 55)), ("fwd", (1, 96, 55, 55)), ("fwd+bwd", (32, 96, 55, 55)))   # (mode, shape)
GPU_MODES = ("fwd", "bwd", "fwd+bwd")
RECOMPUTE = "ours-triton-recompute"
GPU_PROVIDERS = ("ours-triton", "ours-cuda", RECOMPUTE, "torch-eager", "torch-compile")
CPU_PROVIDERS = ("ours-cpu", "torch-cpu") + common.CPU_PEERS
OURS_BACKEND = {"ours-triton": "triton", "ours-cuda": "cuda", "ours-cpu": "cpu"}   # through the public API
OURS = tuple(OURS_BACKEND) + (RECOMPUTE,)
EXT_FUNCTIONS = ("max_pool2d_forward", "max_pool2d_backward")   # what the C++ backends need in _C

common.register_op(
    OP, title="max_pool2d",
    case_fields=("mode", "shape", "dtype", "layout"),
    providers={"cuda": GPU_PROVIDERS, "cpu": CPU_PROVIDERS},
    baselines={"cuda": ("torch-eager", "torch-compile"), "cpu": ("torch-cpu",)},
    peers={"cpu": common.CPU_PEERS},
    notes=["pool parameters: kernel %d, stride %d, padding %d, dilation 1, floor mode; inputs torch.randn; "
           "shape = the input's" % (KERNEL, STRIDE, PADDING),
           "modes: fwd = y = max_pool2d(x); bwd = the backward alone (ours: the max_pool2d_backward op on "
           "offsets from one untimed forward; %s: its backward kernel on (x, dy); others: "
           "autograd.grad(y, x, dy, retain_graph=True) on a y computed outside the timing); "
           "fwd+bwd = autograd.grad(max_pool2d(x), x, dy)" % RECOMPUTE,
           "%s: the benchmark-only Triton variant (triton_kernels/pool.py) whose forward writes no offsets and "
           "whose backward re-derives each window's arg-max from x (autograd keeps x instead of one byte per "
           "output), measured against the saved offsets (ours-triton)" % RECOMPUTE,
           "traffic model (GB/s, %% of copy), in bytes, the same for every provider: fwd = x + y, bwd = dy + dx "
           "(= y + x), fwd+bwd = 2 (x + y).  Not counted: torch's int64 indices (8 B per output; eager "
           "writes them in the forward on CUDA and reads them in the backward).  Ours' real traffic "
           "(fwd x + y + offsets, 1 B per output; bwd dy + offsets + dx; %s: fwd x + y, bwd x + dy + dx) is "
           "in the JSON as gbps_min_traffic / pct_of_copy_min_traffic" % RECOMPUTE,
           "peak extra mem (fwd+bwd only): max_memory_allocated during one fwd+bwd minus the memory "
           "allocated before it (x and dy preallocated), over x.nbytes; dx itself counts 1.0",
           "saved for bwd (fwd+bwd rows): the tensors autograd keeps from one forward, measured with "
           "torch.autograd.graph.saved_tensors_hooks (numel * element_size, deduplicated by data_ptr), over "
           "x.nbytes; x itself counts 1.0 when kept (saved_input_bytes in the JSON)",
           "correctness (first call, vs torch eager in fp32 on the same input): values exact for every "
           "provider (torch.equal after rounding the reference to the dtype); gradients exact for ours (the "
           "fp32 sums rounded once to the dtype, as torch's CUDA kernels accumulate), within (atol, rtol) = "
           "fp32 (1e-4, 1e-4), fp16 (1e-2, 1e-2), bf16 (5e-2, 2e-2) for the baselines (torch.compile may sum "
           "the overlapping windows' gradients in another order)",
           "torch-compile: torch.compile(F.max_pool2d, dynamic=False), compiled once per (shape, dtype, "
           "layout) and reused across modes (an inference and a training graph)",
           "bar (issue): forward >= 1.5x torch in fp32 and >= 2x in fp16/bf16; forward+backward >= 2x torch; "
           "in every layout; CPU: ours >= torch (fp32 32x96x55x55)",
           common.CPU_PEERS_NOTE % "a one-node ONNX MaxPool (kernel %d, stride %d, pads %d)"
           % (KERNEL, STRIDE, PADDING)])


def _torch_pool(t):
    return F.max_pool2d(t, KERNEL, STRIDE, PADDING)


def output_shape(shape):
    return tuple(shape[:2]) + output_hw(shape[2:], KERNEL2, STRIDE2, PADDING2, False)


class RecomputeMaxPool2d(torch.autograd.Function):
    """ours-triton-recompute with autograd: the Triton forward without offsets, x saved, the backward
    re-derives each window's arg-max from x (benchmark-only: pool_recompute.py)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return recompute_forward(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return recompute_backward(x, dy)


def recompute_forward(x):
    y = empty_in_layout(output_shape(x.shape), pool_layout(x), x)
    triton_pool().max_pool2d_forward(x, y, None, KERNEL2, STRIDE2, PADDING2)
    return y


def recompute_backward(x, dy):
    import pool_recompute  # imports triton: only when this provider runs
    dx = empty_in_layout(x.shape, pool_layout(x), x)
    pool_recompute.max_pool2d_backward_recompute(x, dy, dx, KERNEL2, STRIDE2, PADDING2)
    return dx


def forward_fn(provider, x, layout):
    if provider == RECOMPUTE:
        return RecomputeMaxPool2d.apply
    if provider in OURS_BACKEND:
        backend = OURS_BACKEND[provider]
        return lambda t: pool.max_pool2d(t, KERNEL, STRIDE, PADDING, backend=backend)
    return common.torch_fn_of(provider, _torch_pool, (tuple(x.shape), x.dtype, layout, x.device.type))


def build(provider, mode, x, dy, layout):
    """The function to time (it returns its output, so the output is freed after each call)."""
    if mode == "bwd" and provider in OURS_BACKEND:
        backend = OURS_BACKEND[provider]
        _, offsets = torch.ops.alexnet_kernels.max_pool2d_forward(x, KERNEL2, STRIDE2, PADDING2, False, backend)
        hw, channels_last = list(x.shape[2:]), layout == "channels_last"
        return lambda: torch.ops.alexnet_kernels.max_pool2d_backward(dy, offsets, hw, channels_last, KERNEL2,
                                                                     STRIDE2, PADDING2, False, backend)
    if mode == "bwd" and provider == RECOMPUTE:
        return lambda: recompute_backward(x, dy)
    return common.autograd_timed_fn(mode, forward_fn(provider, x, layout), x, dy)


def check_against_eager(provider, mode, x, dy, out):
    """None if the provider's first output (y, or dx for bwd and fwd+bwd) matches torch eager computed in
    fp32 and rounded to x's dtype, else a description of the mismatch.  Max-pool values are exact in any
    dtype; ours' gradients are exact too (fp32 sums of the overlapping windows rounded once), the
    baselines' within TOLERANCES (their summation order may differ)."""
    xf = x.detach().float().requires_grad_(mode != "fwd")
    ref = _torch_pool(xf)
    if mode != "fwd":
        ref = torch.autograd.grad(ref, xf, dy.float())[0]
    ref = ref.to(x.dtype)
    got = common.first_output(out)
    if mode == "fwd" or provider in OURS:
        err = common.exact_mismatch(got, ref)
    else:
        err = common.mismatch(got.float(), ref.float(), *common.TOLERANCES[x.dtype])
    return None if err is None else "%s %s result differs from torch eager (fp32): %s" % (provider, mode, err)


def provider_error(provider, device):
    """None if the provider can run on device here, else why not."""
    if provider == "torch-compile":
        return common.torch_compile_error(device)
    if provider == RECOMPUTE:
        return common.ours_error("triton", device)
    return common.ours_error(OURS_BACKEND[provider], device, EXT_FUNCTIONS) if provider in OURS_BACKEND else None


def traffic(mode, x, y_shape, provider):
    """(bytes of the common traffic model, ours' real traffic in bytes or None) -- see the notes."""
    x_bytes, y_bytes, outputs = common.in_out_bytes(x, y_shape)
    common_bytes = {"fwd": 1, "bwd": 1, "fwd+bwd": 2}[mode] * (x_bytes + y_bytes)
    if provider == RECOMPUTE:   # no offsets; the backward reads x, dy, writes dx
        return common_bytes, {"fwd": x_bytes + y_bytes, "bwd": 2 * x_bytes + y_bytes,
                              "fwd+bwd": 3 * x_bytes + 2 * y_bytes}[mode]
    if provider in OURS_BACKEND:   # + the offsets, 1 B per output, written by the forward, read by the backward
        return common_bytes, {"fwd": 1, "bwd": 1, "fwd+bwd": 2}[mode] * (x_bytes + y_bytes + outputs)
    return common_bytes, None


def row_fields(provider, mode, x, dy, layout):
    """record()'s keywords for one row: the traffic model, and for fwd+bwd what autograd keeps from one forward."""
    traffic_bytes, min_bytes = traffic(mode, x, dy.shape, provider)
    fields = common.saved_for_backward(forward_fn(provider, x, layout), x) if mode == "fwd+bwd" else {}
    return dict(fields, traffic_bytes=traffic_bytes, min_traffic_bytes=min_bytes)


CPU = torch.device("cpu")
BENCH = common.OpBench(OP, output_shape, build, check_against_eager, row_fields, OURS)


@pytest.mark.parametrize("mode,chw,dname,layout,provider", common.gpu_params(GPU_MODES, GPU_SHAPES, GPU_PROVIDERS))
def test_max_pool2d_gpu(benchmark, gpu, mode, chw, dname, layout, provider):
    shape, dtype = (GPU_BATCH,) + tuple(chw), common.DTYPES[dname]
    case = common.case_of(mode, shape, dname, layout)
    common.begin_case(benchmark, OP, "cuda", case, provider, provider_error(provider, gpu))

    common.run_op_gpu_case(benchmark, BENCH, mode, shape, dtype, layout, provider, case, gpu)


@pytest.mark.parametrize("mode,shape", common.cpu_params(CPU_CASES))
def test_max_pool2d_cpu(benchmark, mode, shape):
    common.run_op_cpu_case(benchmark, BENCH, mode, shape, CPU_PROVIDERS,
                           lambda provider: provider_error(provider, CPU),
                           lambda: common.max_pool_graph(shape, KERNEL, STRIDE, PADDING))
