"""Helpers shared by the test modules: devices and backends to run, skips with reasons, inputs, errors."""
import pytest
import torch

from alexnet_kernels import _backends

HAS_CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
INTERPRETED = _backends.triton_interpreting()


def backends_for(device):
    return {"cpu": ["cpu", "triton", "torch"], "cuda": ["cuda", "triton", "torch"]}[device]


def device_backend_params():
    return [pytest.param(d, b, id="%s-%s" % (d, b)) for d in DEVICES for b in backends_for(d)]


def require(backend, device, dtype=torch.float32, torch_cpu_low_precision=False):
    """Skip (with the reason) when `backend` cannot run this case here.  torch_cpu_low_precision: whether
    torch's own composite for the op has CPU float16/bfloat16 kernels (LRN's avg_pool3d has not)."""
    err = _backends.backend_error(backend, torch.device(device))
    if err is not None:
        pytest.skip("backend %r unavailable on %s: %s" % (backend, device, err))
    if backend == "triton" and INTERPRETED and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter has no bf16 math; bf16 Triton runs in the GPU suite")
    if (backend == "torch" and device == "cpu" and dtype in (torch.float16, torch.bfloat16)
            and not torch_cpu_low_precision):
        pytest.skip("torch's composite has no CPU float16/bfloat16 kernel (avg_pool3d)")


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
