"""Convolution + bias + ReLU as torch.library custom ops, with fake kernels and registered autograd.

    torch.ops.alexnet_kernels.conv2d_relu_forward(x, weight, bias, stride, padding, groups, allow_tf32,
                                                 backend, route) -> y
    torch.ops.alexnet_kernels.conv2d_relu_backward(dy, x, weight, y, stride, padding, groups, output_mask,
                                                  allow_tf32, backend, route) -> (dx, dweight, dbias)

x (N, C, H, W), dilation 1.  Saved for backward: x, weight and the output y -- what conv and ReLU keep
anyway; the ReLU mask is y > 0, so no extra tensor.  Outputs not asked for in output_mask come back
as empty tensors (the autograd formula returns None for them).

Backends
  "triton"  the implicit-GEMM kernels of triton_kernels/conv.py (forward with bias + ReLU in the epilogue).
            Backward route: "triton" (dgrad + wgrad kernels, ReLU mask applied on load, d(bias) in the
            wgrad pass) or "aten" (one Triton pass writes dy * (y > 0) and d(bias), then cuDNN's dgrad and
            wgrad through torch.ops.aten.convolution_backward); "auto" measures both once per shape.
  "cuda"    the hand-written CUDA C++ implicit GEMM of csrc/conv_cuda.cu (tensor-core mma.sync, cp.async
            pipeline, bias + ReLU in the epilogue), called as
                _extension.load().conv2d_relu_forward_cuda(x, weight, bias_or_None, y, stride_h, stride_w,
                                                           pad_h, pad_w, groups, allow_tf32)
            with x channels_last, weight with channels_last rows (conv1's K = 363 rows padded to 16 bytes
            in a copy), y preallocated.  Backward (route "auto" or "triton"): CUDA C++ dgrad and wgrad on
            the same GEMM machinery, the mask y > 0 applied as dy is loaded:
                _extension.load().conv2d_relu_dgrad_cuda(dy, y, weight_t, dx, KH, KW, stride_h, stride_w,
                                                         pad_h, pad_w, groups, allow_tf32)
                _extension.load().conv2d_relu_wgrad_partials_cuda(dy, y, x, KH, KW, stride_h, stride_w, pad_h,
                                                                  pad_w, groups, allow_tf32) -> (dw_part, db_part)
            dy, y, x channels_last, weight_t the weight transposed to rows (group, c) of (kh, kw, o);
            dw_part / db_part fp32 partial sums over the pixel splits csrc/conv.h's conv_wgrad_splits picks for
            the device and the planned tile, added here in a fixed order (d(bias) deterministic, no atomics).
            Route "aten": the mask pass + aten's (cuDNN's) dgrad and wgrad.
  "torch"   F.conv2d + relu forward, aten.convolution_backward backward (cuDNN on GPU, oneDNN on CPU).
  "cpu"     oneDNN's convolution with the ReLU fused in as its post-op (one pass over the output), the op
            Inductor uses for conv + relu on CPU:
                torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, dilation, groups,
                                                        "relu", [None], "")
            computed in NCHW or channels_last, whichever measured faster for the case (shape, dtype, the
            layouts given, torch's thread count; once per process, see cpu_layout_choices()), converting
            in and out so that the output keeps the layout stated below.  oneDNN's ReLU post-op maps NaN
            to 0 where torch.relu keeps it, so inputs holding a NaN or an infinity (a non-finite sum of x,
            of the weight or of the bias; one read of each) run the composite conv, then relu, as do the
            cases oneDNN cannot run (float64, float16 without the CPU's support, torch built without
            oneDNN or the op missing; onednn_relu_error(dtype) says why), and torch.jit.trace (which
            cannot record the op's Scalar?[] argument).  Left as a difference: a NaN
            made inside the sum by finite products overflowing both ways comes out 0.  Backward: aten's
            (torch.ops.aten.convolution_backward, oneDNN) on dy * (y > 0).
  "auto"    cuda: the fastest of "triton", "cuda" (when the extension has it) and "torch", measured once
            per (shape, dtype, layout, TF32, device) on first use and cached (see measured_choices());
            cpu: "cpu" (when alexnet_kernels._C, this package's CPU path, is built; else "torch").

Layouts: the kernels take channels_last x and weight; the output has the layout torch's convolution would
give (channels_last if x or weight is channels_last).  No per-call copies where they can be avoided:
  weight  a channels_last weight is used as it is (Conv2dReLU, and optimize() on GPUs, store theirs so: a training
          step then copies no weight); an NCHW one is copied by each forward, and the backward reuses that
          copy while the weight's identity, storage and version counter (torch's `_version`) are unchanged
          (channels_last_weight()).  The copy is never reused by a later forward: an in-place update
          through `.data` does not bump `_version`, so a cross-step cache could not see it;
  x       an NCHW x is copied once in the Triton forward; with a channels_last weight the eager path
          saves that copy for the backward's wgrad instead of copying x again (ops/_registry.py's
          residuals; under torch.compile the backward copies it).  With channels_last weights the outputs
          are channels_last, so a network's activations are converted at most once, at its first conv.
The backward's backend="auto" is the one the forward's "auto" measured for the same case (Triton when none
was measured: under CUDA-graph capture the forward ran Triton too), in eager mode and under torch.compile.
"""
import math
import threading
import time
import weakref
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import _backends
from ._registry import DifferentiableOp

# What backend="cuda" needs from alexnet_kernels._C.
CUDA_FUNCTIONS = ("conv2d_relu_forward_cuda", "conv2d_relu_dgrad_cuda",
                  "conv2d_relu_wgrad_partials_cuda")
# The backend policy: "auto" on cuda is measured per case (below); "cpu" is oneDNN's fused conv + ReLU, any
# floating dtype (those oneDNN lacks run torch's composite).
BACKENDS = _backends.OpBackends(
    dtypes={"triton": _backends.KERNEL_DTYPES, "cuda": _backends.KERNEL_DTYPES,
            "cpu": _backends.KERNEL_DTYPES + (torch.float64,)},
    needs={"cuda": CUDA_FUNCTIONS},
    auto={"cuda": (_backends.OpBackends.MEASURED,), "cpu": ("cpu",)})


def triton_conv():
    """The Triton kernels module, imported on first use."""
    from ..triton_kernels import conv as module
    return module


# --- "auto": measured once per shape -------------------------------------------------------------------

_measured = {}
# One lock per device: two threads (autograd runs each device's backward on its own thread) reaching the same
# unmeasured key measure it once, and two measurements never share a GPU's time.
_measuring = {}
_measuring_guard = threading.Lock()


def measured_choices():
    """{key: (chosen, {candidate: median ms})} of every "auto" decision measured in this process."""
    return dict(_measured)


def _device_lock(device):
    with _measuring_guard:
        return _measuring.setdefault(str(device), threading.Lock())


def _measured_choice(key, candidates, device):
    """The fastest of candidates {name: zero-argument callable} (CUDA events, median), measured once per
    key (keys name the device) on `device`: it is made current for the timing, so do_bench's events,
    cache-flush buffer and synchronisation are that GPU's and its current stream's.  While a CUDA graph is
    being captured nothing can be timed: the first candidate is used and nothing is cached (warm up before
    capturing, as torch's CUDA-graph docs advise)."""
    measured = _measured.get(key)
    if measured is not None:
        return measured[0]
    with _backends.on_device(device):
        if torch.cuda.is_current_stream_capturing():
            return next(iter(candidates))
        with _device_lock(device):
            if key in _measured:  # measured by another thread while this one waited
                return _measured[key][0]
            from triton.testing import do_bench
            times = {}
            for name, run in candidates.items():
                run()  # first call: compilation, autotuning, cuDNN's algorithm search
                times[name] = do_bench(run, warmup=5, rep=20, return_mode="median")
            chosen = min(times, key=times.get)
            _measured[key] = (chosen, times)
    return chosen


def _shape_key(kind, x, weight, stride, padding, groups, allow_tf32):
    """The case a measurement is for (the bias, an epilogue add, is not part of it: the backward, which has
    no bias argument, finds the forward's choice by this key)."""
    return (kind, tuple(x.shape), tuple(weight.shape), tuple(stride), tuple(padding), groups,
            x.dtype, x.is_contiguous(), allow_tf32, str(x.device))


def _forward_choice(x, weight, stride, padding, groups, allow_tf32):
    """The backend the forward's "auto" measured for this case; Triton (the first candidate, what the forward
    runs while a CUDA graph is captured) when it measured nothing.  The eager path's backward given the
    forward's channels_last copy of an NCHW x (made only when Triton ran) finds no key and takes Triton too."""
    measured = _measured.get(_shape_key("forward", x, weight, stride, padding, groups, allow_tf32))
    return "triton" if measured is None else measured[0]


# --- layouts -------------------------------------------------------------------------------------------

def _is_channels_last(t):
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def output_memory_format(x, weight):
    """torch's rule for convolution outputs: channels_last if the input or the weight is."""
    return torch.channels_last if (_is_channels_last(x) or _is_channels_last(weight)) else torch.contiguous_format


def output_hw(hw, kernel_hw, stride, padding):
    return tuple((hw[i] + 2 * padding[i] - kernel_hw[i]) // stride[i] + 1 for i in range(2))


def _empty_output(x, weight, stride, padding):
    shape = (x.shape[0], weight.shape[0]) + output_hw(x.shape[2:], weight.shape[2:], stride, padding)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x, weight))


def _cl(t):
    return t.contiguous(memory_format=torch.channels_last)


# id(weight) -> (weakref to weight, storage pointer, version, channels_last copy)
_weight_cache = {}
_weight_cache_lock = threading.Lock()


def _drop_cached(key, ref):
    with _weight_cache_lock:
        entry = _weight_cache.get(key)
        if entry is not None and entry[0] is ref:
            del _weight_cache[key]


def channels_last_weight(weight, forward=False):
    """`weight` in channels_last: itself when it already is, else a copy.  forward=True: a new copy, kept
    (keyed on the tensor's identity, storage and `_version`) for the backward of the same step, which calls
    with forward=False and reuses it if the weight is unchanged.  Autograd sees the original weight; the
    copy is only read by the kernels."""
    if (weight.is_contiguous(memory_format=torch.channels_last) or torch.compiler.is_compiling()
            or (weight.is_cuda and torch.cuda.is_current_stream_capturing())):
        # Under CUDA-graph capture the copy must be part of the graph: a replay after an in-place update
        # of the weight (outside the graph) would otherwise read a stale cached copy.
        return _cl(weight)
    key = id(weight)
    stamp = (weight.data_ptr(), weight._version, weight.dtype, tuple(weight.shape), weight.device)
    if not forward:
        with _weight_cache_lock:
            entry = _weight_cache.get(key)
            if entry is not None and entry[0]() is weight and entry[1] == stamp:
                return entry[2]
    copy = _cl(weight.detach())
    ref = weakref.ref(weight, lambda r, key=key: _drop_cached(key, r))
    with _weight_cache_lock:
        _weight_cache[key] = (ref, stamp, copy)
    return copy


# --- forward ---------------------------------------------------------------------------------------------

def _torch_forward(x, weight, bias, stride, padding, groups):
    return torch.relu(F.conv2d(x, weight, bias, stride, padding, 1, groups))


def _triton_forward(x, weight, bias, stride, padding, groups, allow_tf32, x_cl=None):
    """x_cl: x already in channels_last (x itself decides the output's layout)."""
    y = _empty_output(x, weight, stride, padding)
    if y.numel():
        triton_conv().conv2d_relu_forward(_cl(x) if x_cl is None else x_cl, channels_last_weight(weight, True),
                                          bias.contiguous() if bias is not None else None,
                                          y, stride, padding, groups, allow_tf32)
    return y


def _cuda_weight(weight):
    """The weight as the CUDA kernel reads it: channels_last rows (Cout, KH, KW, Cg); rows whose size is not
    a multiple of 16 bytes (conv1: K = 363) are copied into rows padded to 16 bytes, so that the weight
    tile loads with 16-byte cp.async (the padding is never read)."""
    w = _cl(weight)
    Cout, Cg, KH, KW = w.shape
    K = Cg * KH * KW
    vec = 16 // w.element_size()
    if K % vec == 0 or Cout == 1:
        return w
    row = -(-K // vec) * vec
    rows = torch.empty((Cout, row), dtype=w.dtype, device=w.device)
    rows[:, :K].copy_(w.permute(0, 2, 3, 1).reshape(Cout, K))
    return rows.as_strided((Cout, Cg, KH, KW), (row, 1, KW * Cg, Cg))


def _cuda_forward(x, weight, bias, stride, padding, groups, allow_tf32):
    from .. import _extension
    y = _empty_output(x, weight, stride, padding)
    if y.numel():
        _extension.load().conv2d_relu_forward_cuda(_cl(x), _cuda_weight(weight),
                                                   bias.contiguous() if bias is not None else None, y,
                                                   stride[0], stride[1], padding[0], padding[1], groups,
                                                   bool(allow_tf32))
    return y


# --- cpu: oneDNN's convolution with a fused ReLU, in the layout measured faster ----------------------------

_onednn_errors = {}


def onednn_relu_error(dtype):
    """None when oneDNN's convolution with a fused ReLU post-op
    (torch.ops.mkldnn._convolution_pointwise, present in torch 2.11 and 2.14) runs `dtype` here, else why
    not (backend="cpu" then runs torch's composite)."""
    if dtype not in _onednn_errors:
        _onednn_errors[dtype] = _onednn_relu_error(dtype)
    return _onednn_errors[dtype]


def _onednn_relu_error(dtype):
    if not torch.backends.mkldnn.is_available():
        return "torch was built without oneDNN (torch.backends.mkldnn.is_available() is False)"
    try:
        torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError) as exc:
        return "this torch has no torch.ops.mkldnn._convolution_pointwise (%s)" % exc
    if dtype == torch.float32:
        return None
    if dtype == torch.bfloat16:
        return None if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "this CPU has no oneDNN bfloat16 path"
    if dtype == torch.float16:
        return (None if torch.ops.mkldnn._is_mkldnn_fp16_supported()
                else "oneDNN's float16 convolution needs AVX-512-FP16 or AVX-NE-CONVERT, which this CPU lacks")
    return "oneDNN has no %s convolution" % str(dtype).replace("torch.", "")


def _onednn_conv_relu(x, weight, bias, stride, padding, groups):
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), list(stride), [1, 1], groups,
                                                   "relu", [None], "")


CPU_LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
_cpu_layouts = {}
_cpu_layouts_lock = threading.Lock()


def cpu_layout_choices():
    """{case: (layout chosen, {layout: best ms})} of every backend="cpu" layout measured in this process."""
    return dict(_cpu_layouts)


def _cpu_in_layout(x, weight, bias, stride, padding, groups, layout, out_format):
    fmt = CPU_LAYOUTS[layout]
    y = _onednn_conv_relu(x.contiguous(memory_format=fmt), weight.contiguous(memory_format=fmt), bias, stride,
                          padding, groups)
    return y.contiguous(memory_format=out_format)


def _cpu_layout(x, weight, bias, stride, padding, groups, out_format):
    """The layout ("nchw" or "channels_last") whose oneDNN convolution, conversions in and out included, was
    fastest for this case: measured once per process (candidates interleaved over rounds, each one's fastest
    round: on a shared CPU the least disturbed; about 0.3 s at most, or 3 rounds)."""
    key = (tuple(x.shape), tuple(weight.shape), tuple(stride), tuple(padding), groups, x.dtype,
           x.is_contiguous(), weight.is_contiguous(), torch.get_num_threads())
    measured = _cpu_layouts.get(key)
    if measured is not None:
        return measured[0]
    with _cpu_layouts_lock:
        if key in _cpu_layouts:
            return _cpu_layouts[key][0]
        best = {}
        for layout in CPU_LAYOUTS:  # warm-up: oneDNN builds its primitive for the case
            _cpu_in_layout(x, weight, bias, stride, padding, groups, layout, out_format)
        start, rounds = time.perf_counter(), 0
        while rounds < 3 or (rounds < 15 and time.perf_counter() - start < 0.3):
            for layout in CPU_LAYOUTS:
                t0 = time.perf_counter()
                _cpu_in_layout(x, weight, bias, stride, padding, groups, layout, out_format)
                ms = (time.perf_counter() - t0) * 1e3
                best[layout] = min(ms, best.get(layout, ms))
            rounds += 1
        _cpu_layouts[key] = (min(best, key=best.get), best)
    return _cpu_layouts[key][0]


def _all_finite(*tensors):
    """Whether no element of the tensors is NaN or infinite: a finite sum proves it (an overflowing sum of
    finite values only sends the caller to the exact path).  One reduction per tensor, each read back as a
    Python float and added there: stacking the sums and testing them as a tensor took four more ops per call,
    which cost more than the sums themselves for AlexNet's batch-1 convolutions."""
    total = 0.0
    for t in tensors:
        if t is not None:
            total += t.sum(dtype=torch.float32).item()
    return math.isfinite(total)


def _cpu_forward(x, weight, bias, stride, padding, groups):
    # torch.jit.trace cannot record the oneDNN op's Scalar?[] argument: a traced graph gets the composite.
    if torch.jit.is_tracing() or onednn_relu_error(x.dtype) is not None or not _all_finite(x, weight, bias):
        return _torch_forward(x, weight, bias, stride, padding, groups)
    out_format = output_memory_format(x, weight)
    if x.shape[0] == 0:
        return _empty_output(x, weight, stride, padding)
    layout = _cpu_layout(x, weight, bias, stride, padding, groups, out_format)
    return _cpu_in_layout(x, weight, bias, stride, padding, groups, layout, out_format)


def _cuda_available(x):
    return _backends.backend_error("cuda", x.device, CUDA_FUNCTIONS) is None


def _run_forward(x, weight, bias, stride, padding, groups, allow_tf32, backend):
    """(y by `backend` (resolved; "auto": the fastest candidate, measured once per case), x's channels_last
    copy when the kernels made one, else None)."""
    if backend == "auto":
        key = _shape_key("forward", x, weight, stride, padding, groups, allow_tf32)
        candidates = {"triton": lambda: _triton_forward(x, weight, bias, stride, padding, groups, allow_tf32)}
        if _cuda_available(x):
            candidates["cuda"] = lambda: _cuda_forward(x, weight, bias, stride, padding, groups, allow_tf32)
        candidates["torch"] = lambda: _torch_forward(x, weight, bias, stride, padding, groups)
        backend = _measured_choice(key, candidates, x.device)
    if backend == "triton":
        x_cl = _cl(x)
        return _triton_forward(x, weight, bias, stride, padding, groups, allow_tf32, x_cl), x_cl
    if backend == "cuda":
        return _cuda_forward(x, weight, bias, stride, padding, groups, allow_tf32), None
    if backend == "cpu":
        return _cpu_forward(x, weight, bias, stride, padding, groups), None
    # allow_tf32 is torch.backends.cudnn.allow_tf32 read by the caller, which cuDNN reads itself.
    return _torch_forward(x, weight, bias, stride, padding, groups), None


# --- backward --------------------------------------------------------------------------------------------

def _masked_grad(dy, y, use_triton):
    """(dy * (y > 0), d(bias) in fp32, fp64 for fp64): one Triton pass, or torch ops."""
    if use_triton:
        g = torch.empty_like(y)
        if y.numel() == 0:
            return g, torch.zeros(y.shape[1], device=y.device, dtype=torch.float32)
        return g, triton_conv().relu_mask_bias_grad(dy, y, g)
    g = torch.where(y > 0, dy, torch.zeros((), dtype=dy.dtype, device=dy.device))
    return g, g.sum((0, 2, 3), dtype=torch.promote_types(g.dtype, torch.float32))  # fp64 stays fp64


def _like_weight(dw, weight):
    out = torch.empty_like(weight)
    return dw if dw.stride() == out.stride() else out.copy_(dw)


def _empty(like):
    return like.new_empty(0)


def _aten_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32, triton_mask):
    g, db = _masked_grad(dy, y, triton_mask)
    if output_mask[0] or output_mask[1]:
        dx, dw, _ = torch.ops.aten.convolution_backward(
            g, x, weight, None, stride, padding, [1, 1], False, [0, 0], groups,
            [output_mask[0], output_mask[1], False])
    # Layouts as the fake kernel states them: dx in torch's conv layout, dw like the weight.
    dx = dx.contiguous(memory_format=output_memory_format(x, weight)) if output_mask[0] else _empty(x)
    dw = _like_weight(dw, weight) if output_mask[1] else _empty(weight)
    return dx, dw, (db.to(weight.dtype) if output_mask[2] else _empty(weight))


def _kernel_grads(dgrad, wgrad, x, weight, y, output_mask):
    """(dx, dw, db) as output_mask asks, from a backend's kernels: dgrad(dx) writes dx (allocated in torch's
    conv layout), wgrad() returns (dw, db) in fp32, cast to the weight's dtype.  An empty batch (y empty)
    runs no kernel: dx is empty or zeros, dw and db zeros."""
    dx, dw, db = _empty(x), _empty(weight), _empty(weight)
    if output_mask[0]:
        dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x, weight))
        if dx.numel():
            if y.numel():
                dgrad(dx)
            else:
                dx.zero_()
    if output_mask[1] or output_mask[2]:
        if y.numel():
            dw32, db32 = wgrad()
        else:  # empty batch: nothing to sum
            dw32 = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32)
            db32 = torch.zeros(weight.shape[0], device=weight.device, dtype=torch.float32)
        if output_mask[1]:
            dw = torch.empty_like(weight).copy_(dw32)
        if output_mask[2]:
            db = db32.to(weight.dtype)
    return dx, dw, db


def _triton_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32):
    kernels = triton_conv()
    return _kernel_grads(
        lambda dx: kernels.conv2d_relu_dgrad(dy, y, channels_last_weight(weight), dx, stride, padding, groups,
                                             allow_tf32),
        lambda: kernels.conv2d_relu_wgrad(dy, y, _cl(x), tuple(weight.shape), stride, padding, groups, allow_tf32),
        x, weight, y, output_mask)


def _cuda_weight_t(weight, groups):
    """The dgrad kernel's weight: rows (group, c), k = (kh*KW + kw)*Og + o contiguous, rows padded to 16 bytes."""
    Cout, Cg, KH, KW = weight.shape
    Og = Cout // groups
    Kd = KH * KW * Og
    vec = 16 // weight.element_size()
    row = -(-Kd // vec) * vec
    rows = torch.empty((groups * Cg, row), dtype=weight.dtype, device=weight.device)
    src = weight.reshape(groups, Og, Cg, KH, KW).permute(0, 2, 3, 4, 1)
    if row == Kd:
        rows.view(groups, Cg, KH, KW, Og).copy_(src)
    else:
        rows[:, :Kd].copy_(src.reshape(groups * Cg, Kd))
    return rows


def _cuda_wgrad(dy, y, x, weight, stride, padding, groups, allow_tf32):
    """(dw, db) in fp32 by the CUDA C++ wgrad kernel: partial sums over the pixel splits its plan picks for the
    device (csrc/conv.h conv_wgrad_splits), added here in a fixed order."""
    from .. import _extension
    Cout, Cg, KH, KW = weight.shape
    dw_part, db_part = _extension.load().conv2d_relu_wgrad_partials_cuda(
        _cl(dy), _cl(y), _cl(x), KH, KW, stride[0], stride[1], padding[0], padding[1], groups, bool(allow_tf32))
    dw = dw_part.sum(0) if dw_part.shape[0] > 1 else dw_part[0]
    db = db_part.sum(0) if db_part.shape[0] > 1 else db_part[0]
    return dw.view(Cout, KH, KW, Cg).permute(0, 3, 1, 2), db


def _cuda_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32, route):
    """The CUDA C++ dgrad and wgrad kernels; route "aten": the mask pass + aten's dgrad and wgrad."""
    from .. import _extension
    if route == "aten":
        return _aten_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32,
                              _backends.backend_error("triton", x.device) is None)
    return _kernel_grads(
        lambda dx: _extension.load().conv2d_relu_dgrad_cuda(
            _cl(dy), _cl(y), _cuda_weight_t(weight, groups), dx, weight.shape[2], weight.shape[3],
            stride[0], stride[1], padding[0], padding[1], groups, bool(allow_tf32)),
        lambda: _cuda_wgrad(dy, y, x, weight, stride, padding, groups, allow_tf32),
        x, weight, y, output_mask)


# Backward route for backend="triton" on cuda when route="auto": measured per shape like the forward.
ROUTES = ("auto", "triton", "aten")


def _run_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32, backend, route):
    if backend == "cuda":
        return _cuda_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32, route)
    if backend in ("torch", "cpu"):
        return _aten_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32, False)
    if route not in ROUTES:
        raise ValueError("conv2d_relu: backward route must be one of %s, got %r" % (ROUTES, route))
    if route == "auto":
        if x.device.type == "cuda":
            key = _shape_key(("backward",) + tuple(output_mask), x, weight, stride, padding, groups, allow_tf32)
            route = _measured_choice(key, {
                "aten": lambda: _aten_backward(dy, x, weight, y, stride, padding, groups, output_mask,
                                               allow_tf32, True),
                "triton": lambda: _triton_backward(dy, x, weight, y, stride, padding, groups, output_mask,
                                                   allow_tf32)}, x.device)
        else:
            route = "triton"
    if route == "triton":
        return _triton_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32)
    return _aten_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32, True)


# --- the ops ---------------------------------------------------------------------------------------------

def conv2d_relu_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: List[int],
                        padding: List[int], groups: int, allow_tf32: bool, backend: str, route: str
                        ) -> torch.Tensor:
    return _forward_and_x_copy(x, weight, bias, stride, padding, groups, allow_tf32, backend, route)[0]


def _forward_and_x_copy(x, weight, bias, stride, padding, groups, allow_tf32, backend, route):
    """The forward op, also returning x's channels_last copy when its kernels made one (a residual)."""
    _backends.check_same_device("conv2d_relu_forward", x=x, weight=weight, bias=bias)
    backend = BACKENDS.resolve(backend, x, "conv2d_relu_forward")
    return _run_forward(x, weight, bias, stride, padding, groups, allow_tf32, backend)


def _conv2d_relu_forward_fake(x, weight, bias, stride, padding, groups, allow_tf32, backend, route):
    return _empty_output(x, weight, stride, padding)


def conv2d_relu_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor,
                         stride: List[int], padding: List[int], groups: int, output_mask: List[bool],
                         allow_tf32: bool, backend: str, route: str
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _backends.check_same_device("conv2d_relu_backward", dy=dy, x=x, weight=weight, y=y)
    backend = BACKENDS.resolve(backend, x, "conv2d_relu_backward")
    if backend == "auto":
        backend = _forward_choice(x, weight, stride, padding, groups, allow_tf32)
    return _run_backward(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32, backend, route)


def _conv2d_relu_backward_fake(dy, x, weight, y, stride, padding, groups, output_mask, allow_tf32, backend,
                               route):
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x, weight)) \
        if output_mask[0] else x.new_empty(0)
    dw = torch.empty_like(weight) if output_mask[1] else weight.new_empty(0)
    db = weight.new_empty(weight.shape[0]) if output_mask[2] else weight.new_empty(0)
    return dx, dw, db


def _save(inputs, y, x_copy):
    x, weight, bias, stride, padding, groups, allow_tf32, backend, route = inputs
    # What conv and ReLU keep anyway: the ReLU mask is y > 0.  x's channels_last copy (eager path) stands for
    # x where torch's layout rule gives dx the same layout for it (a channels_last weight): the backward's
    # wgrad then reads it without copying x again.
    if x_copy is not None and output_memory_format(x, weight) == torch.channels_last:
        x = x_copy
    return (x, weight, y), (stride, padding, groups, allow_tf32, backend, bias is not None, route)


def _grads(backward, saved, params, grad_outputs, needs_input_grad):
    x, weight, y = saved
    stride, padding, groups, allow_tf32, backend, has_bias, route = params
    mask = [needs_input_grad[0], needs_input_grad[1], has_bias and needs_input_grad[2]]
    dx, dw, db = backward(grad_outputs[0], x, weight, y, stride, padding, groups, mask, allow_tf32, backend, route)
    return (dx if mask[0] else None, dw if mask[1] else None, db if mask[2] else None,
            None, None, None, None, None, None)


# conv2d_relu(x, weight, bias, stride, padding, groups, allow_tf32, backend, route): relu(conv2d(x, weight,
# bias)) of a 4-D x with autograd (stride and padding lists of two ints).
conv2d_relu = DifferentiableOp("Conv2dReLU", conv2d_relu_forward, _conv2d_relu_forward_fake, conv2d_relu_backward,
                               _conv2d_relu_backward_fake, _save, _grads, forward_residuals=_forward_and_x_copy)
