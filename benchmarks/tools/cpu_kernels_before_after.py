"""Max-pool 3x3/2, fused ReLU -> LRN -> max-pool and LRN forwards on the CPU, one process (issue 25 items 4-5):
this tree's C++ CPU kernels ("after") against another checkout's ("before", e.g. /work/main), torch.compile,
OpenVINO and onnxruntime (one-node ONNX graphs, three nodes for the fused block, fp32 forced, torch's thread
count), and the copy bandwidth of the same run.  The pool-values cases time max-pool's values-only forward (what
inference runs: empty offsets, y alone) of "after" beside both checkouts' forward with offsets.

Both "before" and "after" are csrc/lrn_cpu.cpp + csrc/pool_cpu.cpp of their checkout built here as throwaway
extensions with the library's C++ flags, so that both are called the same way (no Python dispatch, outputs
preallocated). Every provider writes into preallocated outputs: onnxruntime through IO binding, OpenVINO through
shared-memory tensors set on its infer request, torch.compile as `out.copy_(f(x))` (Inductor writes into `out`).
Providers are interleaved and their order rotated every round; each round times `--calls` calls per provider and
keeps their median; the report gives the median over rounds, the range (min..max), and ours / the best peer per
round.

    PYTHONPATH=$PWD python benchmarks/tools/cpu_kernels_before_after.py --before /work/main --rounds 7
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

WRAPPER = r'''
#include <torch/extension.h>
#include "lrn.h"
#include "pool.h"
namespace {
ak::TensorView view(const at::Tensor& t) {
  ak::TensorView v;
  v.dim = static_cast<int>(t.dim());
  for (int d = 0; d < v.dim; ++d) { v.sizes[d] = t.size(d); v.strides[d] = t.stride(d); }
  v.numel = t.numel();
  v.data = t.data_ptr();
  switch (t.scalar_type()) {
    case at::kFloat: v.dtype = ak::DType::kFloat; break;
    case at::kHalf: v.dtype = ak::DType::kHalf; break;
    case at::kBFloat16: v.dtype = ak::DType::kBFloat16; break;
    case at::kByte: v.dtype = ak::DType::kByte; break;
    default: TORCH_CHECK(false, "wrapper: float, half, bfloat16 or uint8");
  }
  return v;
}
}  // namespace
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // x, y: (N, C, S) in the layout channels_last names (as alexnet_kernels.ops.lrn passes them).
  m.def("lrn_forward", [](const at::Tensor& x, const at::Tensor& y, int64_t size, double alpha, double beta,
                          double k, bool channels_last) {
    ak::lrn_forward_cpu(view(x), view(y), size, alpha, beta, k, channels_last);
  });
  m.def("max_pool2d_forward", [](const at::Tensor& x, const at::Tensor& y, const at::Tensor& offsets,
                                 bool channels_last) {
    ak::max_pool2d_forward_cpu(view(x), view(y), view(offsets), ak::PoolParams{3, 3, 2, 2, 0, 0}, channels_last);
  });
  m.def("relu_lrn_max_pool2d_forward", [](const at::Tensor& x, const at::Tensor& z, const at::Tensor& offsets,
                                          int64_t size, double alpha, double beta, double k, bool channels_last) {
    ak::relu_lrn_max_pool2d_forward_cpu(view(x), view(z), view(offsets), size, alpha, beta, k,
                                        ak::PoolParams{3, 3, 2, 2, 0, 0}, channels_last);
  });
}
'''

FLAGS = ["-O3", "-fno-math-errno"]  # setup.py's C++ flags
SIZE, ALPHA, BETA, K = 5, 1e-4, 0.75, 2.0


def build_kernels(checkout, name):
    from torch.utils import cpp_extension
    # One build folder per checkout: ninja rebuilds only what changed since the last run.
    build = os.path.join(tempfile.gettempdir(), "ak_cpu_kernels_%s_%s" % (
        name, os.path.abspath(checkout).strip("/").replace("/", "_")))
    os.makedirs(build, exist_ok=True)
    wrapper = os.path.join(build, "wrapper.cpp")
    with open(wrapper, "w") as f:
        f.write(WRAPPER)
    csrc = os.path.join(os.path.abspath(checkout), "csrc")
    return cpp_extension.load("ak_cpu_kernels_%s" % name,
                              [wrapper, os.path.join(csrc, "lrn_cpu.cpp"), os.path.join(csrc, "pool_cpu.cpp")],
                              extra_include_paths=[csrc], extra_cflags=FLAGS, build_directory=build)


def git_head(checkout):
    try:
        return subprocess.check_output(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:  # noqa: BLE001 -- only a label
        return "?"


# ---------------------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------------------

def onnx_model(kind, in_shape, out_shape):
    import onnx
    from onnx import TensorProto, helper
    nodes = []
    if kind in ("fused", "lrn"):
        src = "x"
        if kind == "fused":
            nodes.append(helper.make_node("Relu", ["x"], ["r"]))
            src = "r"
        nodes.append(helper.make_node("LRN", [src], ["l" if kind == "fused" else "y"], size=SIZE, alpha=ALPHA,
                                      beta=BETA, bias=K))
    if kind in ("fused", "pool"):
        nodes.append(helper.make_node("MaxPool", ["l" if kind == "fused" else "x"], ["y"], kernel_shape=[3, 3],
                                      strides=[2, 2]))
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def runtime_peers(kind, x, y, threads, skipped):
    """(name, fn) for OpenVINO and onnxruntime, both reading x and writing y in place (NCHW fp32)."""
    import numpy as np
    out = []
    try:
        model = onnx_model(kind, tuple(x.shape), tuple(y.shape))
    except ImportError as e:
        skipped.append("onnx runtimes: no onnx package (%s)" % e)
        return out
    xn, yn = x.numpy(), y.numpy()
    try:
        import openvino as ov
        core = ov.Core()
        compiled = core.compile_model(core.read_model(model, b""), "CPU",
                                      {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        # The request does not keep the Python tensors alive: the closure does (a freed one crashed infer).
        xt, yt = ov.Tensor(xn, shared_memory=True), ov.Tensor(yn, shared_memory=True)
        request.set_input_tensor(xt)
        request.set_output_tensor(yt)
        out.append(("OpenVINO %s" % ov.__version__.split("-")[0], lambda xt=xt, yt=yt: request.infer()))
    except Exception as e:  # noqa: BLE001 -- report and go on
        skipped.append("openvino: %r" % e)
    try:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # no spin-waiting: its idle threads would steal the cores from the provider timed next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        io = sess.io_binding()
        io.bind_input("x", "cpu", 0, np.float32, list(xn.shape), xn.ctypes.data)
        io.bind_output("y", "cpu", 0, np.float32, list(yn.shape), yn.ctypes.data)
        out.append(("onnxruntime %s" % ort.__version__, lambda: sess.run_with_iobinding(io)))
    except Exception as e:  # noqa: BLE001
        skipped.append("onnxruntime: %r" % e)
    return out


def composite(kind):
    def pool(x):
        return F.max_pool2d(x, 3, 2)

    def lrn(x):
        return F.local_response_norm(x, SIZE, ALPHA, BETA, K)

    return {"pool": pool, "lrn": lrn, "fused": lambda x: pool(lrn(torch.relu(x)))}[kind]


def compile_peer(kind, x, y, skipped):
    f = composite(kind)

    def into(x, out):
        out.copy_(f(x))

    try:
        compiled = torch.compile(into)
        compiled(x, y)
        return [("torch.compile", lambda: compiled(x, y))]
    except Exception as e:  # noqa: BLE001
        skipped.append("torch.compile: %r" % e)
        return []


# ---------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------

def case_providers(kind, shape, dtype, channels_last, kernels, peers, skipped):
    """(providers, check): providers = [(name, fn, is_ours)], check() -> mismatches of ours against torch.
    kind "pool-values": the max-pool of "pool", ours also as the values-only forward of kernels[0] ("after")."""
    values_only = kind == "pool-values"
    if values_only:
        kind = "pool"
    N, C, H, W = shape
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=fmt)
    OH, OW = (H - 3) // 2 + 1, (W - 3) // 2 + 1
    ref = composite(kind)(x.float()).to(dtype) if dtype != torch.float32 else composite(kind)(x)
    out_shape = ref.shape
    providers = []
    outs = {}
    for name, lib in kernels:
        y = torch.empty(out_shape, dtype=dtype).contiguous(memory_format=fmt)
        if kind == "lrn":
            def view(t):  # (N, C, S): NCS, or NSC for channels_last (a view of the same memory)
                return t.permute(0, 2, 3, 1).reshape(N, H * W, C).transpose(1, 2) if channels_last \
                    else t.view(N, C, H * W)
            fn = (lambda lib=lib, xs=view(x), ys=view(y):
                  lib.lrn_forward(xs, ys, SIZE, ALPHA, BETA, K, channels_last))
        else:
            offsets = torch.empty(out_shape, dtype=torch.uint8).contiguous(memory_format=fmt)
            if kind == "pool":
                fn = lambda lib=lib, y=y, o=offsets: lib.max_pool2d_forward(x, y, o, channels_last)  # noqa: E731
            else:
                fn = (lambda lib=lib, y=y, o=offsets:
                      lib.relu_lrn_max_pool2d_forward(x, y, o, SIZE, ALPHA, BETA, K, channels_last))
        providers.append((name, fn, True))
        outs[name] = y
        if values_only and lib is kernels[0][1]:  # empty offsets: y alone
            y = torch.empty(out_shape, dtype=dtype).contiguous(memory_format=fmt)
            none = torch.empty(0, dtype=torch.uint8)
            providers.append((name + " values only",
                              lambda lib=lib, y=y: lib.max_pool2d_forward(x, y, none, channels_last), True))
            outs[name + " values only"] = y
    if kind == "fused":  # our separate ops into preallocated buffers (no allocation timed)
        for name, lib in kernels:
            r, l = torch.empty_like(x), torch.empty_like(x)
            y = torch.empty(out_shape, dtype=dtype).contiguous(memory_format=fmt)
            o = torch.empty(out_shape, dtype=torch.uint8).contiguous(memory_format=fmt)
            rv = r.permute(0, 2, 3, 1).reshape(N, H * W, C).transpose(1, 2) if channels_last else r.view(N, C, -1)
            lv = l.permute(0, 2, 3, 1).reshape(N, H * W, C).transpose(1, 2) if channels_last else l.view(N, C, -1)

            def separate(lib=lib, r=r, l=l, rv=rv, lv=lv, y=y, o=o):
                torch.clamp_min(x, 0.0, out=r)
                lib.lrn_forward(rv, lv, SIZE, ALPHA, BETA, K, channels_last)
                lib.max_pool2d_forward(l, y, o, channels_last)
            providers.append((name + " separate ops", separate, False))
    if peers:
        y = torch.empty(out_shape, dtype=dtype).contiguous(memory_format=fmt)
        providers += [(n, f, False) for n, f in compile_peer(kind, x, y, skipped)]
        if dtype == torch.float32 and not channels_last:
            y = torch.empty(out_shape, dtype=dtype)
            providers += [(n, f, False) for n, f in runtime_peers(kind, x, y, torch.get_num_threads(), skipped)]
    copy_dst = torch.empty_like(x)
    providers.insert(0, ("copy (x.copy_)", lambda: copy_dst.copy_(x), False))

    def check():
        bad = []
        for name, fn, ours in providers:
            if ours:
                fn()
                y = outs[name]
                if kind == "pool":
                    ok = torch.equal(y, ref)
                else:
                    tol = 1e-5 if dtype == torch.float32 else 1e-2
                    ok = torch.allclose(y.float(), ref.float(), rtol=tol, atol=tol)
                if not ok:
                    bad.append(name)
        return bad

    return providers, check, x.numel() * x.element_size()


def run_case(providers, rounds, calls):
    times = {name: [] for name, _, _ in providers}
    for _, fn, _ in providers:  # warm-up (first touch, lazy init)
        fn()
        fn()
    for r in range(rounds):
        order = providers[r % len(providers):] + providers[:r % len(providers)]
        for name, fn, _ in order:
            samples = []
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
            times[name].append(statistics.median(samples))
    return times


def report(title, providers, times, in_bytes, out_bytes):
    copy = times[providers[0][0]]
    copy_med = statistics.median(copy)
    peer_names = [n for n, _, ours in providers if not ours and not n.startswith("copy")
                  and "separate" not in n]
    print("\n### %s" % title)
    print("copy bandwidth: %.1f GB/s (2 x %.1f MB in %.2f ms, median)" % (2 * in_bytes / copy_med / 1e9,
                                                                         in_bytes / 1e6, copy_med * 1e3))
    print("| provider | median ms | range ms | % of copy bandwidth | ours / best peer (per-round median, range) |")
    print("|---|---|---|---|---|")
    for name, _, ours in providers:
        t = times[name]
        med = statistics.median(t)
        moved = 2 * in_bytes if name.startswith("copy") else in_bytes + out_bytes
        frac = 100 * (moved / med) / (2 * in_bytes / copy_med)
        ratio = ""
        if ours and peer_names:
            best = [min(times[p][r] for p in peer_names) for r in range(len(t))]
            per_round = [b / a for b, a in zip(best, t)]
            ratio = "%.2fx (%.2f..%.2f)" % (statistics.median(per_round), min(per_round), max(per_round))
        print("| %s | %.3f | %.3f..%.3f | %.0f %% | %s |" % (name, med * 1e3, min(t) * 1e3, max(t) * 1e3, frac,
                                                           ratio))
    sys.stdout.flush()


CASES = {
    # name: (kind, C, H, W, dtype, channels_last)
    "pool": ("pool", 96, 55, 55, torch.float32, False),
    "pool-cl": ("pool", 96, 55, 55, torch.float32, True),
    "pool-fp16": ("pool", 96, 55, 55, torch.float16, False),
    "pool-bf16": ("pool", 96, 55, 55, torch.bfloat16, False),
    "pool-values": ("pool-values", 96, 55, 55, torch.float32, False),
    "pool-values-cl": ("pool-values", 96, 55, 55, torch.float32, True),
    "pool-values256": ("pool-values", 256, 27, 27, torch.float32, False),
    "fused96": ("fused", 96, 55, 55, torch.float32, False),
    "fused256": ("fused", 256, 27, 27, torch.float32, False),
    "fused256-cl": ("fused", 256, 27, 27, torch.float32, True),
    "lrn": ("lrn", 96, 55, 55, torch.float32, False),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="/work/main")
    ap.add_argument("--after", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--batches", default="32,1")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args()

    kernels = [("ours after (%s)" % git_head(args.after), build_kernels(args.after, "after"))]
    if args.before:
        kernels.append(("ours before (%s)" % git_head(args.before), build_kernels(args.before, "before")))
    print("torch %s, %d threads; uptime: %s" % (torch.__version__, torch.get_num_threads(),
                                                 subprocess.check_output(["uptime"], text=True).strip()))
    for case in args.cases.split(","):
        kind, C, H, W, dtype, cl = CASES[case]
        for N in (int(b) for b in args.batches.split(",")):
            skipped = []
            providers, check, in_bytes = case_providers(kind, (N, C, H, W), dtype, cl, kernels,
                                                        not args.no_peers, skipped)
            bad = check()
            out_elems = N * C * (((H - 3) // 2 + 1) * ((W - 3) // 2 + 1) if kind != "lrn" else H * W)
            times = run_case(providers, args.rounds, args.calls)
            title = "%s %dx%dx%dx%d %s%s" % (kind, N, C, H, W, str(dtype).replace("torch.", ""),
                                              " channels_last" if cl else "")
            report(title, providers, times, in_bytes, out_elems * torch.tensor([], dtype=dtype).element_size())
            for s in skipped:
                print("skipped: %s" % s)
            if bad:
                print("MISMATCH against torch: %s" % ", ".join(bad))
    print("\nuptime at the end: %s" % subprocess.check_output(["uptime"], text=True).strip())


if __name__ == "__main__":
    main()
