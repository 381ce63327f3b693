"""Cases, providers and the correctness check shared by the bench_<op>.py files: dtypes, layouts, inputs,
tolerances, a case's start (its group, or the skip), the first call (which compiles, and skips a baseline that
raises) and its check, the torch providers' and autograd modes' timed functions, saved-for-backward bytes, the
cuDNN flags of the convolution benchmarks and the pytest params of an op's GPU grid.
"""
import collections
import contextlib
import os
import time

import pytest
import torch

from .collect import record, skip
from .timing import compiled, measure_gpu


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LAYOUTS = ("NCHW", "channels_last")
# Tolerances (atol, rtol) of the one correctness check per test: the first call vs torch eager computed
# in fp32 on the same input.
TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.float16: (1e-2, 1e-2), torch.bfloat16: (5e-2, 2e-2)}


def make_input(shape, dtype, layout, device):
    """torch.randn of shape, stored NCHW or channels_last."""
    t = torch.randn(shape, device=device, dtype=dtype)
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t


def shape_label(shape):
    return "x".join(map(str, shape))


def first_output(out):
    """The tensor to check of a timed function's result (autograd.grad returns a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def mismatch(got, ref, atol, rtol, ignore=None):
    """None if got is close to ref (torch.isclose; elements where the bool mask `ignore` is set are not
    compared), else a description of the mismatch."""
    ok = torch.isclose(got, ref, rtol=rtol, atol=atol)
    if ignore is not None:
        ok = ok | ignore
    if bool(ok.all()):
        return None
    bad = int((~ok).sum())
    err = (got - ref).abs()
    if ignore is not None:
        err = err.masked_fill(ignore, 0)
    err = err.nan_to_num(float("inf")).max().item()
    return ("%d of %d elements off (atol %g, rtol %g), max abs error %g, %d NaN"
            % (bad, ok.numel(), atol, rtol, err, int(got.isnan().sum())))


def exact_mismatch(got, ref):
    """None if got equals ref bit for bit (same dtype and shape, NaN where ref has NaN), else a description."""
    if got.dtype != ref.dtype or got.shape != ref.shape:
        return "dtype/shape %s %s, expected %s %s" % (got.dtype, tuple(got.shape), ref.dtype, tuple(ref.shape))
    nan = got.isnan()
    if torch.equal(nan, ref.isnan()) and torch.equal(got.masked_fill(nan, 0), ref.masked_fill(nan, 0)):
        return None
    differ = (got != ref) & ~(nan & ref.isnan())
    err = (got.double() - ref.double()).abs().nan_to_num(float("inf")).max().item()
    return ("not exact: %d of %d elements differ, max abs difference %g, %d NaN (expected %d)"
            % (int(differ.sum()), got.numel(), err, int(nan.sum()), int(ref.isnan().sum())))


def require_correct(op, device, case, provider, err, ours):
    """err: None, or how the provider's first result differs from the reference.  Ours must be right
    (a mismatch fails the test); a baseline that is wrong (e.g. a miscompile by torch.compile) is skipped
    with the reason: timing a wrong result would be meaningless."""
    if err is None:
        return
    if ours:
        pytest.fail(err)
    skip(op, device, case, provider, "wrong result, not timed: " + err)


def torch_compile_error(device=None):
    """None if the torch-compile provider can run on `device` here (on cuda, the default, Inductor generates
    Triton; on the CPU, C++: a compile that fails there skips the provider at its first call), else why not."""
    if device is not None and torch.device(device).type == "cpu":
        return None
    from alexnet_kernels import _backends
    err = _backends.triton_error()
    return "inductor needs Triton on cuda: " + err if err else None


def ours_error(backend, device, needs=()):
    """None if our `backend` can run on `device` here, else why not: _backends.backend_error, and for the
    C++ backends ("cpu", "cuda") whether alexnet_kernels._C has the functions `needs` (an extension built
    before an op's kernels existed lacks them)."""
    from alexnet_kernels import _backends, _extension
    err = _backends.backend_error(backend, device)
    if err is None and backend in ("cpu", "cuda"):
        missing = [f for f in needs if not hasattr(_extension.load(), f)]
        if missing:
            err = ("alexnet_kernels._C has no %s (built before these kernels existed): rebuild it with "
                   "`pip install --no-build-isolation .`" % ", ".join(missing))
    return err


def known_bad(table, key):
    """table.get(key): the reason a case is not run (it crashes the process, taking every later case down
    with it), unless BENCH_RUN_KNOWN_BAD=1."""
    if os.environ.get("BENCH_RUN_KNOWN_BAD", "") not in ("", "0"):
        return None
    return table.get(key)


def first_call(make_fn, sync=None, skip_as=None):
    """Build the function to time (make_fn()) and call it once: (fn, out, wall seconds of both).

    The first call compiles (torch.compile, Triton) and sets up (handles, the y a bwd mode keeps).
    skip_as: (op, device, case, provider) of a baseline: an exception in its setup or first call skips the
    provider with the error (a limitation of the baseline); None (ours): the exception fails the test."""
    t0 = time.perf_counter()
    try:
        fn = make_fn()
        out = fn()
        if sync is not None:
            sync()
    except Exception as exc:
        if skip_as is None:
            raise
        skip(*skip_as, reason="first call raised %s: %s" % (type(exc).__name__,
                                                            (str(exc).strip().splitlines() or [""])[0]))
    return fn, out, time.perf_counter() - t0


def saved_tensor_bytes(fn, input=None):
    """What autograd keeps for the backward of fn() (a forward on an input that requires grad), measured
    with torch.autograd.graph.saved_tensors_hooks: {"saved_bytes": sum of numel * element_size of the
    packed tensors, deduplicated by data_ptr; "saved_input_bytes": the part that is `input`'s own storage
    (kept alive, not allocated)}."""
    packed = {}

    def pack(t):
        packed[t.data_ptr()] = (max(packed.get(t.data_ptr(), (0, False))[0], t.numel() * t.element_size()),
                                input is not None and t.untyped_storage().data_ptr()
                                == input.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return {"saved_bytes": sum(b for b, _ in packed.values()),
            "saved_input_bytes": sum(b for b, is_input in packed.values() if is_input)}


def saved_for_backward(forward, x):
    """What autograd keeps from one forward(x) (fwd+bwd rows), measured by saved_tensor_bytes, and saved_x: that
    over x.nbytes (x itself counts 1.0 when kept)."""
    xg = x.detach().requires_grad_()
    saved = saved_tensor_bytes(lambda: forward(xg), xg)
    saved["saved_x"] = saved["saved_bytes"] / x.nbytes
    return saved


def case_of(mode, shape, dname, layout):
    """The row fields of a (mode, shape, dtype, layout) case."""
    return {"mode": mode, "shape": shape_label(shape), "dtype": dname, "layout": layout}


def seeded_inputs(shape, out_shape, dtype, layout, device):
    """(x of shape, the output gradient of out_shape): make_input after torch.manual_seed(0), so every provider
    of a case sees the same tensors."""
    torch.manual_seed(0)
    return make_input(shape, dtype, layout, device), make_input(out_shape, dtype, layout, device)


def in_out_bytes(x, out_shape):
    """(x's bytes, the bytes of an output of out_shape in x's dtype, that output's elements): a traffic model's
    terms."""
    outputs = torch.Size(out_shape).numel()
    return x.nbytes, outputs * x.element_size(), outputs


def cpu_params(cases):
    """pytest params (mode, shape) of an op's CPU cases ((mode, input shape) pairs: fp32 NCHW), with ids
    mode-shape-fp32-NCHW: one test per case, all providers in it (interleave.run_cpu_case)."""
    return [pytest.param(mode, tuple(shape), id="%s-%s-fp32-NCHW" % (mode, shape_label(shape)))
            for mode, shape in cases]


def gpu_params(modes, shapes, providers, layouts=None):
    """pytest params (mode, (C, H, W), dtype name, layout, provider) over the whole GPU grid of an op, with
    ids mode-shape-dtype-layout-provider (select with -k).  layouts: the layout labels (default LAYOUTS;
    e.g. ("row-major",) for an op on 2-D (M, N) inputs, whose shapes are then the (M, N) pairs)."""
    layouts = LAYOUTS if layouts is None else tuple(layouts)
    return [pytest.param(mode, chw, dname, layout, provider,
                         id="%s-%s-%s-%s-%s" % (mode, shape_label(chw), dname, layout, provider))
            for mode in modes for chw in shapes for dname in DTYPES for layout in layouts for provider in providers]


def torch_fn_of(provider, torch_fn, key):
    """The function a torch provider times: torch_fn itself for "torch-eager" / "torch-cpu", torch.compile of it
    for "torch-compile" (compiled once per key, e.g. (shape, dtype, layout, device type)); ValueError otherwise."""
    if provider in ("torch-eager", "torch-cpu"):
        return torch_fn
    if provider == "torch-compile":
        return compiled(torch_fn, key)
    raise ValueError("unknown provider %r" % (provider,))


def autograd_timed_fn(mode, fwd, inputs, dy):
    """The function to time for `mode` through autograd (it returns its output, so the output is freed after each
    call): "fwd" fwd(*inputs); "bwd" autograd.grad of one output computed once, outside the timing, with respect
    to every input; "fwd+bwd" the forward and that grad each call.  inputs: a tensor or a tuple of them."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if mode == "fwd":
        return lambda: fwd(*inputs)
    leaves = tuple(t.detach().requires_grad_() for t in inputs)
    if mode == "bwd":
        out = fwd(*leaves)  # once, outside the timing
        return lambda: torch.autograd.grad(out, leaves, dy, retain_graph=True)
    if mode == "fwd+bwd":
        return lambda: torch.autograd.grad(fwd(*leaves), leaves, dy)
    raise ValueError("unknown mode %r" % (mode,))


@contextlib.contextmanager
def cudnn_conv_flags(cudnn_benchmark):
    """TF32 for fp32 convolutions (torch's default, stated in the case labels) and cudnn.benchmark as given, for
    the benchmarks that run convolutions; both restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def begin_case(benchmark, op, device, case, provider, err=None):
    """Name the pytest-benchmark group "<op>-<gpu|cpu> <the case's fields>", and skip the provider with err, the
    reason it cannot run here, unless that is None."""
    benchmark.group = "%s-%s %s" % (op, "gpu" if device == "cuda" else device, " ".join(map(str, case.values())))
    if err is not None:
        skip(op, device, case, provider, err)


def checked_first_call(op, device, case, provider, make_fn, check, ours, sync=None):
    """first_call(make_fn, sync) -- a baseline that raises is skipped, ours raising fails -- then require_correct
    of check(its output).  Returns (fn, seconds of the first call); the output is not kept."""
    fn, out, seconds = first_call(make_fn, sync, skip_as=None if ours else (op, device, case, provider))
    require_correct(op, device, case, provider, check(out), ours)
    return fn, seconds


# What the shared test bodies need of an op's benchmark (bench_lrn, bench_pool, bench_fused):
#   op                  the registered op name
#   output_shape(shape) the output's shape for an input of shape (the output gradient's)
#   build(provider, mode, x, dy, layout)                  the function to time
#   check(provider, mode, x, dy, out) -> None or the mismatch
#   row_fields(provider, mode, x, dy, layout) -> record()'s keywords (traffic model, extras)
#   ours                the providers that must work (a raise or a wrong result fails the test)
OpBench = collections.namedtuple("OpBench", "op output_shape build check row_fields ours")


def run_op_gpu_case(benchmark, bench, mode, shape, dtype, layout, provider, case, device):
    """One GPU test of an OpBench: seeded inputs, then run_gpu_case (peak memory measured for fwd+bwd)."""
    x, dy = seeded_inputs(shape, bench.output_shape(shape), dtype, layout, device)
    return run_gpu_case(benchmark, bench.op, case, provider, lambda: bench.build(provider, mode, x, dy, layout),
                        lambda out: bench.check(provider, mode, x, dy, out), provider in bench.ours,
                        x.nbytes if mode == "fwd+bwd" else None,
                        lambda: bench.row_fields(provider, mode, x, dy, layout))


def run_gpu_case(benchmark, op, case, provider, make_fn, check, ours, peak_ref_nbytes, row_fields):
    """The body of a GPU test: checked_first_call (compilation included: first_call_s), the check's memory
    released, measure_gpu (peak extra memory over peak_ref_nbytes when given), and the row recorded with
    row_fields() (record()'s keywords: the traffic model and the provider's extras)."""
    torch.cuda.synchronize()
    fn, seconds = checked_first_call(op, "cuda", case, provider, make_fn, check, ours, torch.cuda.synchronize)
    torch.cuda.empty_cache()   # the check's reference: not part of the measurements
    ms, measured = measure_gpu(benchmark, fn, peak_ref_nbytes)
    return record(benchmark, op, "cuda", case, provider, ms, first_call_s=seconds, **measured, **row_fields())
