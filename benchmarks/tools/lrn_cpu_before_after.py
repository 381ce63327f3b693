"""LRN forward on the CPU, one process: this tree's library ("after") against the C++ CPU kernels of another
checkout ("before", e.g. /work/main: its csrc/lrn_cpu.cpp built here as a throwaway extension with the flags
its setup.py gives), the copy bandwidth of the same run, and OpenVINO / onnxruntime one-node LRN graphs where
installed. Providers are interleaved and their order rotated every round; each round times `--calls` calls per
provider and keeps their median; the report gives the median over rounds and the range (min..max).

    PYTHONPATH=$PWD python benchmarks/tools/lrn_cpu_before_after.py --before /work/main --rounds 9
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

WRAPPER = r'''
#include <torch/extension.h>
#include "lrn.h"
void lrn_forward_before(const at::Tensor& x, const at::Tensor& y, int64_t size, double alpha, double beta,
                        double k, bool channels_last) {
  auto view = [](const at::Tensor& t) {
    ak::TensorView v;
    v.dim = 3;
    for (int d = 0; d < 3; ++d) { v.sizes[d] = t.size(d); v.strides[d] = t.stride(d); }
    v.numel = t.numel();
    v.data = t.data_ptr();
    v.dtype = ak::DType::kFloat;
    return v;
  };
  ak::lrn_forward_cpu(view(x), view(y), size, alpha, beta, k, channels_last);
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("lrn_forward", &lrn_forward_before); }
'''


def build_before(checkout, flags):
    from torch.utils import cpp_extension
    build = tempfile.mkdtemp(prefix="lrn_before_")
    wrapper = os.path.join(build, "wrapper.cpp")
    with open(wrapper, "w") as f:
        f.write(WRAPPER)
    csrc = os.path.join(checkout, "csrc")
    return cpp_extension.load("lrn_cpu_before", [wrapper, os.path.join(csrc, "lrn_cpu.cpp")],
                              extra_include_paths=[csrc], extra_cflags=flags, build_directory=build)


def onnx_lrn_model(shape, size, alpha, beta, k):
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=k)
    graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def peers(x, size, alpha, beta, k, threads):
    """(name, fn) of the peers that are installed; what is not, on stderr."""
    out = []
    try:
        model = onnx_lrn_model(tuple(x.shape), size, alpha, beta, k)
    except ImportError as e:
        print("peers skipped: no onnx package (%s)" % e, file=sys.stderr)
        return out
    xn = x.numpy()
    try:
        import openvino as ov
        core = ov.Core()
        compiled = core.compile_model(core.read_model(model, b""), "CPU",
                                      {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        out.append(("openvino %s" % ov.__version__, lambda: request.infer({0: xn})))
    except Exception as e:  # noqa: BLE001 -- report and go on
        print("openvino skipped: %r" % e, file=sys.stderr)
    try:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        # no spin-waiting: its idle threads would steal the cores from the provider timed next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        out.append(("onnxruntime %s" % ort.__version__, lambda: sess.run(None, {"x": xn})))
    except Exception as e:  # noqa: BLE001
        print("onnxruntime skipped: %r" % e, file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="/work/main")
    ap.add_argument("--before-flags", default="-O3", help="the before checkout's setup.py cxx flags")
    ap.add_argument("--shape", default="32,96,55,55")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--betas", default="0.75,0.7499")
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args()

    from alexnet_kernels import _extension
    after_op = _extension.load().lrn_forward  # this tree's library (the loader checks its sources digest)
    before = build_before(args.before, args.before_flags.split())

    shape = tuple(int(v) for v in args.shape.split(","))
    N, C = shape[0], shape[1]
    size, alpha, k = 5, 1e-4, 2.0
    torch.manual_seed(0)
    x = torch.randn(shape)
    y = torch.empty_like(x)
    x3, y3 = x.view(N, C, -1), y.view(N, C, -1)
    threads = torch.get_num_threads()

    providers = [("copy_ (dst.copy_(src))", lambda: y.copy_(x))]
    for beta in (float(b) for b in args.betas.split(",")):
        providers.append(("before beta=%g" % beta,
                          lambda beta=beta: before.lrn_forward(x3, y3, size, alpha, beta, k, False)))
        providers.append(("after beta=%g" % beta,
                          lambda beta=beta: after_op(x3, y3, size, alpha, beta, k, False)))
    if not args.no_peers:
        providers += [(name + " beta=0.75", fn) for name, fn in peers(x, size, alpha, 0.75, k, threads)]

    # Agreement first: before and after (and torch) on the same input.
    ref = torch.nn.functional.local_response_norm(x[:2].double(), size, alpha, 0.75, k)
    for name, fn in providers:
        if name.startswith(("before beta=0.75", "after beta=0.75")):
            fn()
            err = ((y[:2].double() - ref).norm() / ref.norm()).item()
            print("%-28s rel err vs float64 (first 2 samples): %.2e" % (name, err))

    times = {name: [] for name, _ in providers}
    for fn in (f for _, f in providers):  # warm-up (first-touch, lazy init)
        fn()
    for r in range(args.rounds):
        order = providers[r % len(providers):] + providers[:r % len(providers)]
        for name, fn in order:
            samples = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
            times[name].append(statistics.median(samples))

    nbytes = x.numel() * x.element_size()
    copy_med = statistics.median(times[providers[0][0]])
    print("\nshape %s fp32 NCHW, n=%d alpha=%g k=%g, %d threads, %d rounds x %d calls (median per round)"
          % ("x".join(map(str, shape)), size, alpha, k, threads, args.rounds, args.calls))
    print("| provider | median ms | range ms | GB/s (read + write) | % of copy bandwidth |")
    print("|---|---|---|---|---|")
    for name, _ in providers:
        t = times[name]
        med = statistics.median(t)
        print("| %s | %.2f | %.2f..%.2f | %.1f | %.0f %% |" % (name, med * 1e3, min(t) * 1e3, max(t) * 1e3,
                                                             2 * nbytes / med / 1e9, 100 * copy_med / med))
    print("\nper-round ratios before/after (beta=0.75):",
          " ".join("%.2f" % (b / a) for b, a in zip(times["before beta=0.75"], times["after beta=0.75"])))


if __name__ == "__main__":
    main()
