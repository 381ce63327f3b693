"""AlexNet-2012 on the CPU (issue 25 items 6-7): inference at batch 1 and 32 and a training step, ours before
and after against torch.compile, onnxruntime and OpenVINO, in one process.

    PYTHONPATH=$PWD python benchmarks/tools/alexnet_cpu_issue25.py --rounds 7 --out results.md

Providers (fp32, torch.get_num_threads() threads everywhere: --threads, default 2):
  ours-before   the path main ran: AlexNet(kernels="ours") through its two towers (forward_towers: the
                activations concatenated at the exchange points), every Conv2dReLU on backend "torch" (main's
                "cpu"/"auto" conv: F.conv2d, then a separate ReLU), fc6/fc7 as LinearReLUDropout
  ours-after    AlexNet(kernels="ours") as it runs now: the one-device graph (grouped convolutions, no
                concatenations, fc as addmm into each tower's half in inference) and backend "cpu" (oneDNN's
                convolution with the ReLU post-op, layout measured per shape)
  compile       torch.compile(AlexNet(kernels="torch"), dynamic=False) (Inductor, default mode), the same
                parameters
  onnxruntime   alexnet_kernels.export.onnx_export(AlexNet(kernels="ours")) (native LRN nodes), onnxruntime
                CPUExecutionProvider, intra_op_num_threads = threads, inter_op 1
  openvino      the same ONNX file compiled by OpenVINO for "CPU", INFERENCE_NUM_THREADS = threads,
                INFERENCE_PRECISION_HINT f32 (its default on AVX-512 CPUs may be bf16)
Every provider's logits are checked against ours-after's (relative L2 <= 1e-4; a failure is reported, not timed).
Training step (batch --train-batch): forward in train mode (dropout 0.5), cross-entropy, backward, SGD step
(momentum 0.9) and zero_grad; ours-before, ours-after and compile (the runtimes do not train).
Timing: each round times every provider per case over --calls consecutive calls (default 3, their median: the
first call after another provider pays for that provider's still-spinning runtime threads), the providers' order
rotated each round (a shared machine's load then falls on all of them alike); after a warm-up call (compile: the
compilation, timed apart).
The report gives the median over rounds and the range (min..max), img/s from the median, the machine's
`uptime` before and after, and the ratios ours-after / peer from the medians.
--profile: before timing, per inference batch, torch.profiler's top ops (self CPU time) for ours-after and
OpenVINO's per-layer counters (PERF_COUNT, real time summed by layer type) over 5 calls each, printed.
"""
import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from alexnet import AlexNet  # noqa: E402
from alexnet.model import spread_init_  # noqa: E402
from alexnet_kernels.conv import Conv2dReLU  # noqa: E402

TOLERANCE = 1e-4


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def models():
    torch.manual_seed(0)
    after = AlexNet(1000, kernels="ours")
    spread_init_(after)  # no near-ties in pool5 (see spread_init_): the providers' logits compare tightly
    before = copy.deepcopy(after)
    for m in before.modules():
        if isinstance(m, Conv2dReLU):
            m.backend = "torch"
    ref = AlexNet(1000, kernels="torch")
    ref.load_state_dict(after.state_dict())
    return before, after, ref


def inference_providers(batch, before, after, ref, threads, onnx_path):
    x = torch.randn(batch, 3, 227, 227, generator=torch.Generator().manual_seed(batch))
    for m in (before, after, ref):
        m.eval()
    providers = {}

    def eager(fn):
        def run():
            with torch.inference_mode():
                return fn(x).numpy()
        return run
    providers["ours-before"] = eager(before.forward_towers)
    providers["ours-after"] = eager(after)
    compiled = torch.compile(ref, dynamic=False)  # static shapes: batch 1 and 32 each get their own code
    providers["compile"] = eager(compiled)
    try:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        # no spin-waiting: its idle threads would steal the cores from the provider timed next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        xn = x.numpy()
        providers["onnxruntime"] = lambda: sess.run(None, {name: xn})[0]
    except ImportError as e:
        print("onnxruntime skipped:", e)
    try:
        import openvino as ov
        model = ov.Core().compile_model(onnx_path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                           "INFERENCE_PRECISION_HINT": "f32"})
        request = model.create_infer_request()
        xn = x.numpy()
        providers["openvino"] = lambda: request.infer({0: xn})[0].copy()
    except ImportError as e:
        print("openvino skipped:", e)
    return providers


def training_providers(batch, before, after, ref):
    x = torch.randn(batch, 3, 227, 227, generator=torch.Generator().manual_seed(100 + batch))
    target = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(7))
    providers = {}
    for name, source in (("ours-before", before), ("ours-after", after), ("compile", ref)):
        net = copy.deepcopy(source).train()
        if name == "ours-before":
            fwd = net.forward_towers
        elif name == "compile":
            fwd = torch.compile(net, dynamic=False)
        else:
            fwd = net
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

        def step(fwd=fwd, opt=opt):
            loss = torch.nn.functional.cross_entropy(fwd(x), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
        providers[name] = step
    return providers


def profile(batch, after, threads, onnx_path, calls=5):
    """Where the time goes at `batch`: ours-after's top ops and OpenVINO's layers by type, each over `calls` calls."""
    x = torch.randn(batch, 3, 227, 227, generator=torch.Generator().manual_seed(batch))
    with torch.inference_mode():
        after(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                after(x)
    print("ours-after, batch %d, %d calls:" % (batch, calls))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    try:
        import openvino as ov
    except ImportError as e:
        print("openvino profile skipped:", e)
        return
    model = ov.Core().compile_model(onnx_path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                       "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})
    request = model.create_infer_request()
    request.infer({0: x.numpy()})
    by_type = {}
    for _ in range(calls):
        request.infer({0: x.numpy()})
        for layer in request.profiling_info:
            key = "%s (%s)" % (layer.node_type, layer.exec_type)
            by_type[key] = by_type.get(key, 0.0) + layer.real_time.total_seconds() * 1e3 / calls
    print("openvino, batch %d, ms per call by layer type:" % batch)
    for key, ms in sorted(by_type.items(), key=lambda kv: -kv[1]):
        print("  %-40s %8.2f" % (key, ms))


def measure(cases, rounds, calls=1):
    """cases: {case: {provider: fn}} -> {case: {provider: [ms per round]}}, providers rotated per round; a
    round's figure is the median of `calls` consecutive calls (with calls > 1 the first call after another
    provider -- which pays for that provider's runtime threads still spinning or the caches it left -- is not
    what decides)."""
    times = {c: {p: [] for p in ps} for c, ps in cases.items()}
    for r in range(rounds):
        for case, ps in cases.items():
            names = list(ps)
            names = names[r % len(names):] + names[:r % len(names)]
            for p in names:
                ms = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    ps[p]()
                    ms.append((time.perf_counter() - t0) * 1e3)
                times[case][p].append(statistics.median(ms))
        print("round %d done (%s)" % (r + 1, uptime()), flush=True)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3, help="consecutive calls per provider and round (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--profile", action="store_true", help="print where the inference time goes (docstring)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = uptime()
    before, after, ref = models()
    import alexnet_kernels.export as export
    onnx_path = os.path.join(tempfile.mkdtemp(prefix="alexnet25_"), "alexnet-ours.onnx")
    export.onnx_export(copy.deepcopy(after).eval(), (torch.randn(2, 3, 227, 227),), onnx_path)

    if args.profile:
        for batch in map(int, args.batches.split(",")):
            profile(batch, after.eval(), args.threads, onnx_path)
    cases, warm = {}, {}
    for batch in map(int, args.batches.split(",")):
        ps = inference_providers(batch, before, after, ref, args.threads, onnx_path)
        expected = None
        kept = {}
        for name in ["ours-after"] + [n for n in ps if n != "ours-after"]:
            t0 = time.perf_counter()
            got = np.asarray(ps[name](), dtype=np.float64)
            warm[("inference", batch, name)] = (time.perf_counter() - t0) * 1e3
            if expected is None:
                expected = got
            err = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
            if err <= TOLERANCE:
                kept[name] = ps[name]
            else:
                print("%s batch %d: logits differ from ours-after by %.3g (relative L2): not timed"
                      % (name, batch, err))
            print("inference batch %d %s: first call %.0f ms, rel err %.2g" % (batch, name,
                                                                           warm[("inference", batch, name)], err))
        cases[("inference", batch)] = kept
    if not args.no_train:
        ps = training_providers(args.train_batch, before, after, ref)
        for name, fn in ps.items():
            t0 = time.perf_counter()
            fn()
            warm[("training", args.train_batch, name)] = (time.perf_counter() - t0) * 1e3
            print("training %s: first call %.0f ms" % (name, warm[("training", args.train_batch, name)]))
        cases[("training", args.train_batch)] = ps
    times = measure(cases, args.rounds, args.calls)
    load_after = uptime()

    lines = ["# AlexNet-2012 on the CPU: ours before/after vs torch.compile, onnxruntime, OpenVINO "
             "(issue 25 items 6-7)",
             "",
             "- machine: %s, %d threads everywhere; shared with other jobs: `uptime` before: `%s`; after: `%s`"
             % (cpu_name(), args.threads, load_before, load_after),
             "- torch %s, onnxruntime %s, openvino %s; %d rounds, providers rotated per round, each timed over %d "
             "consecutive calls per round (their median); median of the rounds, ms (min–max)"
             % (torch.__version__, version("onnxruntime"), version("openvino"), args.rounds, args.calls),
             "- produced by `benchmarks/tools/alexnet_cpu_issue25.py` (its docstring defines the providers)",
             ""]
    for (kind, batch), ps in times.items():
        lines += ["## %s, batch %d" % (kind, batch), "",
                  "| provider | median ms (min–max) | img/s | ours-after vs it (>1: ours faster) | first call ms |",
                  "|---|---|---|---|---|"]
        ours = statistics.median(ps["ours-after"])
        for name, ts in ps.items():
            med = statistics.median(ts)
            ratio = "—" if name == "ours-after" else "%.2f× (%.2f–%.2f)" % (
                med / ours, min(ts) / max(ps["ours-after"]), max(ts) / min(ps["ours-after"]))
            lines.append("| %s | %.1f (%.1f–%.1f) | %.1f | %s | %.0f |" % (
                name, med, min(ts), max(ts), batch * 1e3 / med, ratio, warm[(kind, batch, name)]))
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


def version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return "%s (%d CPUs)" % (line.split(":", 1)[1].strip(), os.cpu_count())
    except OSError:
        pass
    return "cpu"


if __name__ == "__main__":
    main()
