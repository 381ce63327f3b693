"""Where the GPU work runs: every Triton launch goes through triton_kernels/_launch.py, which makes the tensors'
device current (so the launch uses that device and its current stream), rejects tensors on two devices and
serialises autotuning; the conv "auto" timing runs on the tensors' device, once per key; autotune keys bucket
the pixel count and name the kernel's shape.

Runs on CPU (the Triton kernels under the interpreter, the device switch through a stand-in for torch.cuda);
the GPU tests at the end need one or two GPUs and skip here."""
import ast
import inspect
import os
import sys
import threading
import time

import pytest
import torch
import torch.nn.functional as F
import triton

import alexnet_kernels.conv as conv_api
from alexnet_kernels import _backends
from alexnet_kernels.ops import conv as conv_ops
from alexnet_kernels.ops import dropout as dropout_ops
from alexnet_kernels.triton_kernels import _launch
from alexnet_kernels.triton_kernels import conv as tconv
from alexnet_kernels.triton_kernels import lrn as tlrn
from common import HAS_CUDA, INTERPRETED, gpu, make_input, rel_err

KERNEL_DIR = os.path.dirname(os.path.abspath(_launch.__file__))
KERNEL_MODULES = ("lrn", "pool", "dropout", "conv")
N_GPUS = torch.cuda.device_count() if HAS_CUDA else 0
two_gpus = pytest.mark.skipif(N_GPUS < 2, reason="needs 2 CUDA GPUs, found %d" % N_GPUS)
needs_interpreter = pytest.mark.skipif(not INTERPRETED, reason="runs the Triton kernels under TRITON_INTERPRET=1")


# --- the one launcher --------------------------------------------------------------------------------------

def _direct_launches(path):
    """(line, text) of every kernel[grid](...) call, and of every .run(...) / .warmup(...) call, in a file."""
    source = open(path).read()
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Subscript) or (isinstance(f, ast.Attribute) and f.attr in ("run", "warmup")):
            found.append((node.lineno, ast.get_source_segment(source, f)))
    return found


def test_no_triton_launch_outside_the_launcher():
    outside = {}
    paths = [os.path.join(KERNEL_DIR, name) for name in sorted(os.listdir(KERNEL_DIR))
             if name.endswith(".py") and name != "_launch.py"]
    # The benchmark-only kernel built on the package's (benchmarks/pool_recompute.py) uses the launcher too.
    paths.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                              "pool_recompute.py"))
    for path in paths:
        sites = _direct_launches(path)
        if sites:
            outside[os.path.basename(path)] = sites
    assert not outside, "Triton launched outside triton_kernels/_launch.py: %s" % outside
    assert _direct_launches(os.path.join(KERNEL_DIR, "_launch.py")), "the launcher itself launches"


class _LaunchProbe:
    """Stands in for a kernel object of a module: records which function subscripted it (kernel[grid])."""

    def __init__(self, qualname, obj, log):
        self.qualname, self.obj, self.log = qualname, obj, log

    def __getitem__(self, grid):
        caller = sys._getframe(1).f_code
        self.log.append((self.qualname, os.path.abspath(caller.co_filename), caller.co_name))
        return self.launch

    def launch(self, *args, **kwargs):
        # The launcher finds the tensors' device among the leading arguments: no tensor after a scalar.
        tensors = [isinstance(a, torch.Tensor) for a in args]
        assert tensors == sorted(tensors, reverse=True), "%s: a tensor argument after a scalar" % self.qualname
        assert not any(isinstance(v, torch.Tensor) for v in kwargs.values()), self.qualname

    def __getattr__(self, attr):
        return getattr(self.obj, attr)


def test_every_kernel_is_launched_by_the_launcher(monkeypatch):
    """Every launcher of the four modules (and benchmarks/pool_recompute.py), on meta tensors (the AOT check's cases, every layer and layout), with
    every kernel object replaced by a probe: each kernel is launched, and only from _launch.py."""
    import importlib

    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import KernelInterface

    import triton_aot

    log, expected = [], set()
    # The package's modules and the benchmark-only kernels built on them (benchmarks/pool_recompute.py), all
    # imported before any is patched: pool_recompute imports the pool module's helpers by name.
    modules = {m: triton_aot._kernels_module(m) for m in KERNEL_MODULES + triton_aot.BENCHMARK_MODULES}
    for m, mod in modules.items():
        objects = {k: v for k, v in vars(mod).items() if isinstance(v, KernelInterface)}
        wrapped = {id(v.fn) for v in objects.values() if isinstance(v, Autotuner)}
        for k, v in objects.items():
            qualname = "%s.%s" % (m, k)
            if isinstance(v, Autotuner) or (k.endswith("_kernel") and id(v) not in wrapped):
                expected.add(qualname)
            monkeypatch.setattr(mod, k, _LaunchProbe(qualname, v, log))
    for _, case in triton_aot.cases(True):
        case("fp32")
    outside = sorted({(k, f, fn) for k, f, fn in log if f != os.path.abspath(_launch.__file__)})
    assert not outside, "kernels launched outside the launcher: %s" % outside
    missing = expected - {k for k, _, _ in log}
    assert not missing, "kernels no case launched (add a case to tests/triton_aot.py): %s" % sorted(missing)


def test_launch_rejects_tensors_on_two_devices():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"lrn_forward_kernel: .*cpu and meta"):
        tlrn.lrn_forward(x, torch.empty_like(x, device="meta"), 5, 1e-4, 0.75, 2.0, False)


def test_ops_share_one_device_check():
    x = torch.randn(3)
    with pytest.raises(ValueError, match=r"dropout_forward: .*x on cpu, seed on meta"):
        _backends.check_same_device("dropout_forward", x=x, seed=torch.zeros(1, dtype=torch.int64, device="meta"))
    _backends.check_same_device("dropout_forward", x=x, seed=torch.zeros(1, dtype=torch.int64), bias=None)


class _FakeCuda:
    """torch.cuda.current_device / torch.cuda.device stand-ins that record every device switch."""

    def __init__(self, monkeypatch, current):
        self.current, self.events = current, []
        fake = self

        class device:
            def __init__(self, index):
                self.index = index

            def __enter__(self):
                fake.events.append(("enter", self.index))
                self.previous, fake.current = fake.current, self.index

            def __exit__(self, *exc):
                fake.current = self.previous
                fake.events.append(("exit", self.index))
                return False

        monkeypatch.setattr(torch.cuda, "current_device", lambda: fake.current)
        monkeypatch.setattr(torch.cuda, "device", device)


class _RecordingKernel:
    def __init__(self, fake):
        self.fake = fake

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.fake.events.append(("launch", self.fake.current, grid))


@pytest.mark.parametrize("current", [0, 1])
def test_launch_makes_the_tensors_device_current(monkeypatch, current):
    """The launch runs with the tensors' device (1 here) current, switching only when it is not already."""
    fake = _FakeCuda(monkeypatch, current)
    monkeypatch.setattr(_launch, "tensors_device", lambda kernel, args: 1)
    _launch.launch(_RecordingKernel(fake), (3,), torch.zeros(1))
    if current == 1:
        assert fake.events == [("launch", 1, (3,))]
    else:
        assert fake.events == [("enter", 1), ("launch", 1, (3,)), ("exit", 1)]
    assert fake.current == current


def test_launch_on_cpu_touches_no_cuda_state(monkeypatch):
    fake = _FakeCuda(monkeypatch, 0)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: pytest.fail("current_device read for cpu tensors"))
    _launch.launch(_RecordingKernel(fake), (1,), torch.zeros(1), 3, 2.0)
    assert fake.events == [("launch", 0, (1,))]


def test_on_device_switches_only_to_another_cuda_device(monkeypatch):
    fake = _FakeCuda(monkeypatch, 0)
    with _backends.on_device(torch.device("cuda", 1)):
        assert fake.current == 1
    with _backends.on_device(torch.device("cuda", 0)), _backends.on_device(torch.device("cpu")):
        assert fake.current == 0
    assert fake.events == [("enter", 1), ("exit", 1)]


# --- thread-safe autotuning ----------------------------------------------------------------------------------

def _two_configs():
    return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16}, num_warps=4, num_stages=1),
            triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=4, num_stages=1)]


def _tunable(monkeypatch, autotuner, bench):
    """Give an autotuned kernel two configs, an empty cache and a stand-in benchmark (bench(kernel_call,
    quantiles) -> [median, p20, p80] ms), as on a GPU with autotuning on."""
    monkeypatch.setattr(autotuner, "configs", _two_configs())
    monkeypatch.setattr(autotuner, "cache", {})
    monkeypatch.setitem(autotuner.__dict__, "do_bench", bench)  # do_bench is a cached_property


def _conv_reference(x, w, b, stride=1, padding=1):
    return torch.relu(F.conv2d(x.double(), w.double(), b.double(), stride, padding))


@needs_interpreter
def test_two_threads_tuning_one_kernel(monkeypatch):
    """Two threads reach the untuned conv forward at once (as the two towers' backward threads can): one tunes
    while the other launches.  Unserialised, the second thread's launch clears the Autotuner's shared
    self.nargs in the middle of the first one's benchmark (a TypeError there)."""
    meet = threading.Barrier(2)
    first_bench = threading.local()
    interpreter = threading.Lock()  # Triton's interpreter itself is not thread-safe (a GPU launch is)

    def bench(kernel_call, quantiles):
        with interpreter:
            kernel_call()
        if not getattr(first_bench, "done", False):
            first_bench.done = True
            try:
                meet.wait(timeout=1.0)  # both threads inside tuning at once, unless tuning is serialised
            except threading.BrokenBarrierError:
                pass
        if threading.current_thread().name == "slow":
            time.sleep(1.5)  # the other thread finishes its call meanwhile
        return [1.0, 1.0, 1.0]

    _tunable(monkeypatch, tconv._forward, bench)
    shapes = {"slow": ((2, 4, 6, 6), (8, 4, 3, 3)), "fast": ((1, 4, 5, 5), (8, 4, 3, 3))}
    inputs = {name: (make_input(xs, seed=1), make_input(ws, scale=0.3, seed=2), make_input(ws[:1], seed=3))
              for name, (xs, ws) in shapes.items()}
    results, errors = {}, []

    def work(name):
        try:
            x, w, b = inputs[name]
            results[name] = conv_api.conv2d_relu(x, w, b, padding=1, backend="triton")
        except Exception as e:  # noqa: BLE001 -- reported by the main thread
            errors.append((name, repr(e)))

    threads = [threading.Thread(target=work, args=(n,), name=n) for n in shapes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for name, (x, w, b) in inputs.items():
        assert rel_err(results[name], _conv_reference(x, w, b)) < 1e-5
    assert len(tconv._forward.cache) == 2


def test_only_multi_config_autotuners_take_the_lock(monkeypatch):
    assert _launch.tuning_lock(tlrn.lrn_forward_kernel) is None
    monkeypatch.setattr(tconv._forward, "configs", tconv._forward.configs[:1])
    assert _launch.tuning_lock(tconv._forward) is None
    monkeypatch.setattr(tconv._forward, "configs", _two_configs())
    lock = _launch.tuning_lock(tconv._forward)
    assert lock is not None and _launch.tuning_lock(tconv._forward) is lock


# --- autotune keys --------------------------------------------------------------------------------------------

def test_autotune_keys_bucket_pixels_and_name_the_kernel_shape():
    """No raw pixel count in any key (it changes with the batch size), and every compile-time constant that
    shapes the kernel (window, bias, precision) plus the layouts in it; the tile sizes are what is tuned."""
    for tuner, bucket in ((tconv._forward, "M_BUCKET"), (tconv._dgrad, "M_BUCKET"), (tconv._wgrad, "P_BUCKET")):
        keys = set(tuner.keys)
        assert bucket in keys and not keys & {"M", "P", "P_PER_SPLIT"}, tuner.keys
        params = inspect.signature(tuner.base_fn).parameters.values()
        constants = {p.name for p in params if "constexpr" in str(p.annotation)} - {"BLOCK_M", "BLOCK_N",
                                                                                     "BLOCK_K", "GROUP_M"}
        assert constants >= {"KW", "SH", "INPUT_PRECISION"}
        assert constants <= keys, constants - keys
        assert {"syc"} <= keys  # the output's (or the saved output's) layout
    assert tconv.tuning_bucket(48) == tconv.tuning_bucket(64) == 64 != tconv.tuning_bucket(65)


@needs_interpreter
def test_a_new_batch_size_reuses_the_tuned_config(monkeypatch):
    """Batches of 3 and 4 (48 and 64 output pixels: one bucket) tune once; a new layout or stride tunes again."""
    for tuner in (tconv._forward, tconv._dgrad, tconv._wgrad):
        _tunable(monkeypatch, tuner, lambda kernel_call, quantiles: [1.0, 1.0, 1.0])
    w = make_input((8, 4, 3, 3), scale=0.3, seed=2).requires_grad_()
    b = make_input((8,), seed=3).requires_grad_()

    def step(batch, layout="contiguous", stride=1):
        x = make_input((batch, 4, 4 * stride, 4 * stride), layout=layout, seed=batch).requires_grad_()
        y = conv_api.conv2d_relu(x, w, b, stride=stride, padding=1, backend="triton", backward_route="triton")
        y.sum().backward()
        assert rel_err(y, _conv_reference(x, w, b, stride)) < 1e-5

    step(3)
    step(4)
    assert [len(t.cache) for t in (tconv._forward, tconv._dgrad, tconv._wgrad)] == [1, 1, 1]
    step(4, layout="channels_last")
    assert len(tconv._forward.cache) == 2
    step(4, stride=2)
    assert len(tconv._forward.cache) == 3


# --- the conv "auto" timing ------------------------------------------------------------------------------------

def test_auto_timing_measures_each_key_once_across_threads(monkeypatch):
    """Two threads asking for the same unmeasured key: the candidates are timed once, both get the choice."""
    import triton.testing
    timed = []

    def do_bench(fn, warmup, rep, return_mode):
        timed.append(fn)
        time.sleep(0.3)
        return {"a": 2.0, "b": 1.0}[fn()]

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(conv_ops, "_measured", {})
    key = ("test-key", "cuda:7")
    start = threading.Barrier(2)
    chosen = []

    def ask():
        start.wait()
        chosen.append(conv_ops._measured_choice(key, {"a": lambda: "a", "b": lambda: "b"}, torch.device("cpu")))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert chosen == ["b", "b"] and len(timed) == 2
    assert conv_ops.measured_choices()[key] == ("b", {"a": 2.0, "b": 1.0})


def test_auto_timing_runs_on_the_tensors_device(monkeypatch):
    import triton.testing
    fake = _FakeCuda(monkeypatch, 0)
    seen = []

    def do_bench(fn, warmup, rep, return_mode):
        seen.append(fake.current)
        return 1.0

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: seen.append(("capture?", fake.current)))
    monkeypatch.setattr(conv_ops, "_measured", {})
    conv_ops._measured_choice(("k", "cuda:1"), {"a": lambda: None}, torch.device("cuda", 1))
    assert seen == [("capture?", 1), 1] and fake.current == 0


def test_conv_backward_auto_is_the_forwards_measured_choice(monkeypatch):
    """The backward op's backend="auto" (eager and torch.compile alike) runs what the forward's "auto" measured
    for the case, and Triton (what the forward runs under CUDA-graph capture) when nothing was measured."""
    x, w = torch.zeros(1, 2, 3, 3), torch.zeros(2, 2, 1, 1)
    monkeypatch.setattr(conv_ops, "_measured", {})
    assert conv_ops._forward_choice(x, w, [1, 1], [0, 0], 1, True) == "triton"
    conv_ops._measured[conv_ops._shape_key("forward", x, w, [1, 1], [0, 0], 1, True)] = ("torch", {"torch": 1.0})
    assert conv_ops._forward_choice(x, w, [1, 1], [0, 0], 1, True) == "torch"


def test_conv_cache_keys_name_the_device():
    x, w = torch.zeros(1, 2, 3, 3), torch.zeros(2, 2, 1, 1)
    assert "cpu" in conv_ops._shape_key("forward", x, w, [1, 1], [0, 0], 1, True)


# --- GPU: a tower on a device that is not the current one -----------------------------------------------------------

def _triton_ops(device):
    """(name, fn() -> tuple of tensors) running every Triton op forward and backward on `device`."""
    import alexnet_kernels.dropout as dropout_api
    import alexnet_kernels.fused as fused_api
    import alexnet_kernels.lrn as lrn_api
    import alexnet_kernels.pool as pool_api

    def grads(fn, *inputs):
        inputs = [t.detach().clone().requires_grad_() for t in inputs]
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
        return (out,) + tuple(t.grad for t in inputs)

    x = make_input((2, 16, 13, 13), device=device, layout="channels_last", seed=6)
    w = make_input((8, 16, 3, 3), device=device, scale=0.1, seed=7)
    b = make_input((8,), device=device, seed=8)
    fc = make_input((4, 40), device=device, seed=9)
    fb = make_input((40,), device=device, seed=10)
    gen = torch.Generator(device=device)
    return [
        ("lrn", lambda: grads(lambda t: lrn_api.local_response_norm(t, 5, 1e-4, 0.75, 2.0, backend="triton"), x)),
        ("pool", lambda: grads(lambda t: pool_api.max_pool2d(t, 3, 2, backend="triton"), x)),
        ("fused", lambda: grads(lambda t: fused_api.relu_lrn_max_pool2d(t, 5, 1e-4, 0.75, 2.0, 3, 2,
                                                                        backend="triton"), x)),
        ("conv", lambda: grads(lambda t, ww, bb: conv_api.conv2d_relu(t, ww, bb, padding=1, backend="triton",
                                                                      backward_route="triton"), x, w, b)),
        ("dropout", lambda: grads(lambda t: dropout_api.dropout(t, 0.5, generator=gen.manual_seed(1),
                                                                backend="triton"), fc)),
        ("bias_relu_dropout", lambda: grads(lambda t, bb: dropout_api.bias_relu_dropout(
            t, bb, 0.5, generator=gen.manual_seed(2), backend="triton"), fc, fb)),
    ]


@gpu
@two_gpus
def test_triton_ops_run_on_their_tensors_device():
    """Every Triton op on cuda:1 while cuda:0 is current gives the bits it gives with cuda:1 current."""
    with torch.cuda.device(1):
        expected = {name: run() for name, run in _triton_ops("cuda:1")}
    torch.cuda.set_device(0)
    for name, run in _triton_ops("cuda:1"):
        got = run()
        assert torch.cuda.current_device() == 0
        for g, e in zip(got, expected[name]):
            assert g.device == torch.device("cuda", 1) and torch.equal(g, e), name


@gpu
@two_gpus
def test_triton_launch_uses_the_current_stream_of_the_tensors_device():
    """cuda:1's current stream is a side stream that first sleeps and then writes x; the op (launched while
    cuda:0 is current) must be queued behind that write to see x."""
    import alexnet_kernels.lrn as lrn_api
    torch.cuda.set_device(0)
    src = make_input((4, 32, 27, 27), device="cuda:1", seed=11)
    expected = lrn_api.local_response_norm(src, 5, 1e-4, 0.75, 2.0, backend="triton")
    x = torch.zeros_like(src)
    torch.cuda.synchronize(1)
    side = torch.cuda.Stream(device=1)
    with torch.cuda.device(1):
        previous = torch.cuda.current_stream()
        torch.cuda.set_stream(side)
    torch.cuda.set_device(0)
    try:
        with torch.cuda.device(1):
            torch.cuda._sleep(50_000_000)  # on `side`: tens of milliseconds
            x.copy_(src)
        y = lrn_api.local_response_norm(x, 5, 1e-4, 0.75, 2.0, backend="triton")
        side.synchronize()
    finally:
        with torch.cuda.device(1):
            torch.cuda.set_stream(previous)
        torch.cuda.set_device(0)
    assert torch.equal(y, expected)


@gpu
@two_gpus
@pytest.mark.parametrize("devices", [("cuda:0", "cuda:1"), ("cuda:1", "cuda:0")])
def test_two_tower_alexnet_on_two_gpus_with_triton(devices, monkeypatch):
    """Both towers' forward and backward (autograd runs each device's backward on its own thread) with the
    Triton kernels, the first tower on a device other than the current one in the second case; outputs and
    gradients match torch's network on the CPU (exact fp32: TF32 off)."""
    from alexnet import AlexNet
    from alexnet.model import spread_init_
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    ref = AlexNet(kernels="torch", dropout=0.0)
    spread_init_(ref)
    net = AlexNet(dropout=0.0, devices=devices, backend="triton")
    net.load_state_dict(ref.state_dict())
    torch.cuda.set_device(0)
    x = make_input((2, 3, 227, 227), scale=1.0, seed=1)
    y_ref = ref(x)
    y_ref.sum().backward()
    y = net(x)
    y.sum().backward()
    assert y.device == torch.device(devices[0]) and rel_err(y, y_ref) < 1e-4
    ref_grads = {name: p.grad for name, p in ref.named_parameters()}
    for name, p in net.named_parameters():
        assert rel_err(p.grad, ref_grads[name]) < 1e-3, name


@gpu
@two_gpus
def test_conv_auto_times_on_the_tensors_device(monkeypatch):
    import triton.testing
    seen = []
    real = triton.testing.do_bench

    def do_bench(fn, *args, **kwargs):
        seen.append(torch.cuda.current_device())
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    monkeypatch.setattr(conv_ops, "_measured", {})
    torch.cuda.set_device(0)
    x = make_input((2, 16, 13, 13), device="cuda:1", layout="channels_last", seed=12).requires_grad_()
    w = make_input((24, 16, 3, 3), device="cuda:1", scale=0.1, seed=13).requires_grad_()
    conv_api.conv2d_relu(x, w, None, padding=1, backend="auto").sum().backward()
    assert seen and set(seen) == {1}  # the forward choice (and the backward route when Triton won), on cuda:1
    keys = list(conv_ops.measured_choices())
    assert keys and all(k[-1] == "cuda:1" for k in keys)


@gpu
@two_gpus
@pytest.mark.parametrize("backend", ["triton", "cuda", "torch"])
def test_mixed_devices_are_a_clear_error(backend):
    x = torch.randn(8, device="cuda:0")
    seed = torch.zeros(1, dtype=torch.int64, device="cuda:1")
    with pytest.raises(ValueError, match="cuda:0.*cuda:1"):
        torch.ops.alexnet_kernels.dropout_forward(x, seed, 0.5, backend)
