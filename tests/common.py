"""Helpers shared by the test modules: devices and backends to run, skips with reasons, inputs, errors, and the
checks every op's tests make alike (errors, autograd, custom-op and torch.compile contracts, C++ test builds)."""
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch.utils import cpp_extension

from alexnet_kernels import _backends
from alexnet_kernels._backends import BackendUnavailableError

HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
INTERPRETED = _backends.triton_interpreting()


def child_pythonpath():
    """PYTHONPATH for a child process that must import the same alexnet_kernels as this one: the folder holding
    the imported package first, then this process's sys.path.  sys.path alone is not enough: a module that puts the
    checkout on it (after site-packages here) would come before site-packages in the child, whose PYTHONPATH
    entries precede the installed packages -- and the child would import the source tree, without its extension."""
    import alexnet_kernels
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(alexnet_kernels.__file__)))
    return os.pathsep.join(dict.fromkeys([package_parent] + [p for p in sys.path if p]))


def backends_for(device):
    return {"cpu": ["cpu", "triton", "torch"], "cuda": ["cuda", "triton", "torch"]}[device]


def device_backend_params():
    return [pytest.param(d, b, id="%s-%s" % (d, b)) for d in DEVICES for b in backends_for(d)]


def on_gpu_backends(test):
    """Decorator: a GPU-only test run on the cuda and triton backends."""
    return gpu(pytest.mark.parametrize("backend", ["cuda", "triton"])(test))


def gpu_backend_dtype_layout_shape_cases(shapes):
    """Decorator: a GPU-only test run on the cuda and triton backends, in fp32/fp16/bf16, contiguous and
    channels_last, on each of `shapes`."""
    marks = [gpu,
             pytest.mark.parametrize("backend", ["cuda", "triton"]),
             pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                                     ids=["fp32", "fp16", "bf16"]),
             pytest.mark.parametrize("layout", ["contiguous", "channels_last"]),
             pytest.mark.parametrize("shape", shapes, ids=lambda s: "x".join(map(str, s)))]

    def decorate(test):
        for mark in reversed(marks):   # as if stacked in this order above the test
            test = mark(test)
        return test
    return decorate


def require(backend, device, dtype=torch.float32, torch_cpu_low_precision=False, gpu_memory_gib=None):
    """Skip (with the reason) when `backend` cannot run this case here.  torch_cpu_low_precision: whether
    torch's own composite for the op has CPU float16/bfloat16 kernels (LRN's avg_pool3d has not).
    gpu_memory_gib: the GPU memory the case needs (tensors past 2**31 elements)."""
    err = _backends.backend_error(backend, torch.device(device))
    if err is not None:
        pytest.skip("backend %r unavailable on %s: %s" % (backend, device, err))
    if backend == "triton" and INTERPRETED and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter has no bf16 math; bf16 Triton runs in the GPU suite")
    if (backend == "torch" and device == "cpu" and dtype in (torch.float16, torch.bfloat16)
            and not torch_cpu_low_precision):
        pytest.skip("torch's composite has no CPU float16/bfloat16 kernel (avg_pool3d)")
    if gpu_memory_gib is not None and torch.cuda.get_device_properties(0).total_memory < gpu_memory_gib * 2**30:
        pytest.skip("needs %d GiB of GPU memory" % gpu_memory_gib)


def make_input(shape, dtype=torch.float32, device="cpu", layout="contiguous", scale=3.0, seed=None):
    """Fresh random input (never zeros) in the requested memory layout."""
    g = torch.Generator().manual_seed(seed if seed is not None else torch.randint(0, 2**31, ()).item())
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    elif layout == "spatial_last":  # (N, *, C) storage for any rank, e.g. 3-D (N, L, C).transpose(1, 2)
        perm = (0,) + tuple(range(2, len(shape))) + (1,)
        inv = sorted(range(len(perm)), key=perm.__getitem__)
        x = x.permute(perm).contiguous().permute(inv)
    elif layout == "strided":  # non-contiguous view: every other element of the last dim
        big = torch.randn(shape[:-1] + (2 * shape[-1],), generator=g, dtype=torch.float64) * scale
        x = big[..., ::2]
    return x.to(device=device, dtype=dtype)


def rel_err(a, ref):
    a, ref = a.detach().to(torch.float64).cpu(), ref.detach().to(torch.float64).cpu()
    denom = ref.norm().item()
    return (a - ref).norm().item() / (denom if denom > 0 else 1.0)


def capture_and_replay(step, refill):
    """Run step() once on a side stream (a warm-up: kernels compile and load outside the capture), capture
    it in a CUDA graph, call refill() (new input values, in place), replay the graph and synchronize.
    Returns the graph (for more replays)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    with torch.no_grad():
        refill()
    graph.replay()
    torch.cuda.synchronize()
    return graph


def replayed_forward_and_backward(fn, x, dy, fresh_input):
    """fn(x) and its gradient with respect to x for dy, captured in a CUDA graph (capture_and_replay) and
    replayed after fresh_input() is copied into x: the replay's (y, dx)."""
    out = {}

    def step():
        y = fn(x)
        out["y"], out["dx"] = y, torch.autograd.grad(y, x, dy)[0]

    capture_and_replay(step, lambda: x.copy_(fresh_input()))
    return out["y"], out["dx"]


def after_a_conv_under_autocast(module, amp_dtype):
    """module after a fresh Conv2d(3, 16, 3) on cuda, under CUDA autocast to amp_dtype; both outputs come out
    in amp_dtype.  Returns (conv, h, y): h the conv's output, y the module's."""
    conv = torch.nn.Conv2d(3, 16, 3).cuda()
    x = torch.randn(4, 3, 17, 17, device="cuda")
    with torch.autocast("cuda", dtype=amp_dtype):
        h = conv(x)
        y = module(h)
        assert y.dtype == h.dtype == amp_dtype
    return conv, h, y


def assert_within_twice_torch_error(dtype, *results):
    """Flash-attention's rule for low precision: each result is at most twice as far (relative error) from the
    float64 reference as torch's own `dtype` result, plus eps/16 of `dtype`.  results: (ours, float64
    reference, torch's) triples."""
    eps = torch.finfo(dtype).eps
    for ours, ref, torchs in results:
        assert rel_err(ours, ref) <= 2 * rel_err(torchs, ref) + eps / 16


def assert_keeps_memory_format(fn, x, memory_format):
    """fn(x) and its gradient with respect to x (stored in memory_format, requiring grad) are stored in
    memory_format too.  Returns (y, dy, dx)."""
    y = fn(x)
    assert y.is_contiguous(memory_format=memory_format)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, dy)
    assert dx.is_contiguous(memory_format=memory_format)
    return y, dy, dx


def assert_bad_arguments_raise(fn, good_kwargs, bad, exc, match):
    """fn(**good_kwargs) with the entries of `bad` replaced raises exc, its message matching `match`."""
    with pytest.raises(exc, match=match):
        fn(**dict(good_kwargs, **bad))


def assert_unavailable_backends_say_why(fn, x):
    """fn(t, backend) on a backend that cannot take t raises BackendUnavailableError saying why: 'cuda'
    for the CUDA backend on a CPU tensor, 'float64' for Triton on a float64 one."""
    with pytest.raises(BackendUnavailableError, match="cuda"):
        fn(x, "cuda")
    with pytest.raises(BackendUnavailableError, match="float64"):
        fn(x.double(), "triton")


def saved_for_backward(fn):
    """fn() under saved_tensors_hooks: (its result, the tensors autograd saved for the backward)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        result = fn()
    return result, saved


def assert_double_backward_raises(forwards, x, grad_shape):
    """Each forward(x)'s backward is not differentiable again: differentiating the gradient raises instead
    of answering zero."""
    for forward in forwards:
        dy = torch.randn(grad_shape, requires_grad=True)
        (g,) = torch.autograd.grad(forward(x), x, dy, create_graph=True)
        with pytest.raises(RuntimeError):
            torch.autograd.grad(g.sum(), (x, dy))


def assert_forward_mode_ad_raises(fn, x):
    """fn on an input carrying a forward-mode tangent, under fwAD.dual_level and under torch.func.jvp, raises that
    the op has no jvp -- never a result without its tangent (the no-grad path must not take such an input)."""
    import torch.autograd.forward_ad as fwAD
    with pytest.raises((NotImplementedError, RuntimeError), match="jvp"):
        with fwAD.dual_level():
            fn(fwAD.make_dual(x, torch.randn_like(x)))
    with pytest.raises((NotImplementedError, RuntimeError), match="jvp"):
        torch.func.jvp(fn, (x,), (torch.randn_like(x),))


def opcheck_both_layouts(op, x, args):
    """torch.library.opcheck of op(t, *args) with t = x and x in channels_last."""
    for t in (x, x.detach().to(memory_format=torch.channels_last).requires_grad_()):
        torch.library.opcheck(op, (t,) + tuple(args))


def compile_fullgraph(fn, **kwargs):
    """torch.compile(fn, fullgraph=True, **kwargs) after a dynamo reset (no graphs of earlier tests reused)."""
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, **kwargs)


def compiled_and_eager(compiled, fn, x):
    """(y, y_eager, g, g_eager): compiled(x) and fn(x), and the gradients of their sums with respect to x."""
    y, y_eager = compiled(x), fn(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_eager,) = torch.autograd.grad(y_eager.sum(), x)
    return y, y_eager, g, g_eager


def build_test_extension(name, sources, tmp_path_factory, extra_cflags, include_dir):
    """A C++ test harness built with torch.utils.cpp_extension.load in a fresh temporary folder; skips (with
    the reason) where the sources are not in this tree or ninja is missing."""
    if not all(os.path.isfile(s) for s in sources):
        pytest.skip("csrc/ is not in this tree (installed package without sources)")
    if shutil.which("ninja") is None and not cpp_extension.is_ninja_available():
        pytest.skip("torch.utils.cpp_extension.load needs ninja")
    return cpp_extension.load(name, sources, extra_include_paths=[include_dir], extra_cflags=extra_cflags,
                              build_directory=str(tmp_path_factory.mktemp(name)), verbose=False)


def shared_build(name, command, root, inputs, tmp_path_factory):
    """Run `command` (a list; the literal "{out}" stands for the output file) once per distinct build: with
    ALEXNET_KERNELS_TEST_BUILD_CACHE set (.ci/run sets it in its temporary folder, for both legs), the output is
    kept there under a digest of the command, the compiler's --version and the bytes of every file in `inputs`
    (paths relative to `root`: leg 2 builds from a copy of the tree), and the other torch leg, whose nvcc and
    sources are the same, reuses it; a lock makes a concurrent run wait for the first one's build instead of
    repeating it.  Unset: built in a fresh temporary folder, as before.  Only for outputs that depend on nothing
    else (no torch headers).  Returns the output's path."""
    cache = os.environ.get("ALEXNET_KERNELS_TEST_BUILD_CACHE")
    if not cache:
        out = str(tmp_path_factory.mktemp(name) / name)
        _run_build(command, out)
        return out
    # The compiler by name and --version (each leg's venv may have its own copy), the rest with <root> for root.
    digest = hashlib.sha256("\0".join([os.path.basename(command[0])] + [a.replace(root, "<root>")
                                                                         for a in command[1:]]).encode())
    version = subprocess.run([command[0], "--version"], capture_output=True, text=True)
    digest.update(version.stdout.encode())
    for path in sorted(inputs):
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    os.makedirs(cache, exist_ok=True)
    out = os.path.join(cache, "%s-%s" % (name, digest.hexdigest()[:20]))
    with open(out + ".lock", "w") as lock, _locked(lock):
        if not os.path.exists(out):
            _run_build(command, out + ".part")
            os.replace(out + ".part", out)
    return out


@contextlib.contextmanager
def _locked(f):
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)


def _run_build(command, out):
    res = subprocess.run([out if a == "{out}" else a for a in command], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
