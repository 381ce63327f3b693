"""Backend names, availability ("not supported because ...") and the default choice."""
import os

import torch

from . import _extension

BACKENDS = ("auto", "triton", "cuda", "cpu", "torch")
ENV_VAR = "ALEXNET_KERNELS_BACKEND"


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that is not built here or cannot take this input."""


def _validated(name, origin):
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError("%s must be one of %s, got %r" % (origin, ", ".join(repr(b) for b in BACKENDS), name))
    return name


# Set but empty (`ALEXNET_KERNELS_BACKEND= python ...`) counts as unset, as for most such variables.
_default = {"backend": _validated(os.environ.get(ENV_VAR) or "auto", "$" + ENV_VAR)}


def default_backend():
    """The backend used when none is given: $ALEXNET_KERNELS_BACKEND at import, else "auto"."""
    return _default["backend"]


def set_default_backend(name):
    """Change the process-wide default backend (same values as ``backend=``)."""
    _default["backend"] = _validated(name, "backend")


# Triton reads TRITON_INTERPRET when its kernels are first built: read it once, as Triton does.
_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_interpreting():
    return _TRITON_INTERPRET


_triton_state = {}


def triton_error():
    """None if Triton kernels can be launched here, else why not."""
    if "error" not in _triton_state:
        try:
            import triton  # noqa: F401
            _triton_state["error"] = None
        except Exception as exc:
            _triton_state["error"] = "triton is not importable (%s: %s)" % (type(exc).__name__, exc)
    return _triton_state["error"]


def backend_error(backend, device, needs=()):
    """None if `backend` can run on tensors of `device` here, else the reason it cannot.  needs: the
    functions of alexnet_kernels._C an op calls (an extension built before the op existed lacks them)."""
    if backend == "torch":
        return None
    if backend == "triton":
        err = triton_error()
        if err:
            return err
        if device.type == "cuda":
            return None
        if device.type == "cpu" and triton_interpreting():
            return None
        return ("the Triton kernels run on cuda tensors (or on cpu under TRITON_INTERPRET=1), "
                "got a %s tensor" % device.type)
    ext = _extension.load()
    if ext is None:
        return "alexnet_kernels._C is unavailable (%s)" % _extension.load_error()
    missing = [name for name in needs if not hasattr(ext, name)]
    if missing:
        return ("alexnet_kernels._C has no %s: it was built before these kernels existed; rebuild it "
                "(pip install .)" % ", ".join(missing))
    if backend == "cpu":
        if device.type != "cpu":
            return "the C++ CPU kernels take cpu tensors, got a %s tensor" % device.type
        return None
    if backend == "cuda":
        if not _extension.build_info()["with_cuda"]:
            return "alexnet_kernels._C was built without its CUDA sources (no CUDA toolkit at build time)"
        if device.type != "cuda":
            return "the CUDA kernels take cuda tensors, got a %s tensor" % device.type
        return None
    raise ValueError("unknown backend %r" % (backend,))


def status(device):
    """{backend: None (usable) or reason} for every concrete backend on `device`."""
    return {b: backend_error(b, device) for b in BACKENDS if b != "auto"}


def check(backend, device, op, needs=()):
    err = backend_error(backend, device, needs)
    if err is not None:
        raise BackendUnavailableError("%s: backend=%r is not available: %s" % (op, backend, err))


def resolve(backend, x, fastest_on_cuda, supports_dtype, needs=()):
    """Map "auto" (or the default) to a concrete backend for tensor `x`.

    fastest_on_cuda(x) -> ordered preference list for a cuda tensor (a table measured per op);
    supports_dtype(backend, dtype) -> whether that backend's kernels take the dtype."""
    if backend is None:
        backend = default_backend()
    _validated(backend, "backend")
    if backend != "auto":
        return backend
    device = x.device
    if device.type == "cuda":
        prefs = fastest_on_cuda(x)
    elif device.type == "cpu":
        prefs = ("cpu",)
    else:
        prefs = ()
    for b in prefs:
        if supports_dtype(b, x.dtype) and backend_error(b, device, needs) is None:
            return b
    return "torch"


def validate_backend_argument(op, backend):
    """The functional APIs' `backend=` argument: None means the default; anything else must be a name."""
    if backend is None:
        return default_backend()
    if backend not in BACKENDS:
        raise ValueError("%s: backend must be one of %s, got %r" % (op, ", ".join(map(repr, BACKENDS)), backend))
    return backend


KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def supports_dtype(backend, dtype):
    """Every op's kernels take fp32/fp16/bf16 (fp32 accumulation); the C++ CPU kernels also float64 (for
    gradcheck); the torch composites take any floating dtype."""
    return backend == "torch" or dtype in KERNEL_DTYPES or (backend == "cpu" and dtype == torch.float64)


def resolve_checked(backend, x, op, cuda_preference, needs=()):
    """resolve() with the dtype policy above and an op's cuda_preference (its ordered backends for cuda
    tensors), then raise BackendUnavailableError if the backend cannot run on x (not built, wrong device,
    unsupported dtype)."""
    backend = resolve(backend, x, lambda t: cuda_preference, supports_dtype, needs)
    check(backend, x.device, op, needs)
    if not supports_dtype(backend, x.dtype):
        raise BackendUnavailableError(
            "%s: backend=%r does not support dtype %s: its kernels take float32, float16 and bfloat16%s; "
            "backend='torch' takes any floating dtype" % (op, backend, x.dtype, " (and float64 on 'cpu')"))
    return backend


def is_cuda_tensor(x):
    return isinstance(x, torch.Tensor) and x.device.type == "cuda"


def check_same_device(op, **tensors):
    """ValueError naming the devices when the tensors given (name=tensor; None skipped) are not all on one
    device: the one check every backend of an op with several tensor inputs shares."""
    named = [(name, t) for name, t in tensors.items() if t is not None]
    if len({t.device for _, t in named}) > 1:
        raise ValueError("%s: all tensors must be on one device, got %s" % (
            op, ", ".join("%s on %s" % (name, t.device) for name, t in named)))


class _NoGuard:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NO_GUARD = _NoGuard()


def on_device(device):
    """A context manager that makes `device` (a torch.device) the current CUDA device when it is a CUDA device
    other than the current one, and does nothing otherwise: for GPU work started from Python that follows the
    current device (events, synchronisation, allocations on "cuda", Triton launches)."""
    if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
        return torch.cuda.device(device.index)
    return _NO_GUARD
