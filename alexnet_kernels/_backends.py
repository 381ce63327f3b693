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


def validate_backend_argument(op, backend):
    """The functional APIs' `backend=` argument: None means the default; anything else must be a name."""
    if backend is None:
        return default_backend()
    if backend not in BACKENDS:
        raise ValueError("%s: backend must be one of %s, got %r" % (op, ", ".join(map(repr, BACKENDS)), backend))
    return backend


# What most kernels take (fp32 accumulation); an op declares its own table in its OpBackends.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _dtype_names(dtypes):
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


class OpBackends:
    """One op's backend policy, declared next to its kernels (ops/<op>.py): the dtypes each kernel backend
    takes, what its C++ backends need from alexnet_kernels._C, and the order "auto" tries per device type.
    "torch" (the composite) takes every floating dtype and is the last resort of "auto".

    dtypes: {backend: dtypes its kernels take} for "triton", "cuda", "cpu".
    needs: {backend: functions of alexnet_kernels._C it calls} (an extension built before the op lacks them).
    auto: {device type: ordered backends}; the value MEASURED keeps "auto" on that device for a dtype some
        kernel takes (the op measures its candidates on first use, see ops/conv.py).
    runs_as: {backend: backend} for a name that runs another backend's code (conv's "cpu" is torch's CPU
        convolution): the name's device rule is checked, the other backend is returned.
    """

    MEASURED = "measured"

    def __init__(self, dtypes, needs=None, auto=None, runs_as=None):
        self.dtypes = dict(dtypes)
        self.needs = dict(needs or {})
        self.auto = dict(auto or {"cuda": ("triton", "cuda"), "cpu": ("cpu",)})
        self.runs_as = dict(runs_as or {})
        # (backend, device, dtype) -> the backend resolved: what is built and importable does not change
        # within a process, and the eager path resolves twice per training step (forward and backward).
        self._resolved = {}

    @classmethod
    def triton_cuda_cpu(cls, ext_functions, auto, cpu_dtypes=(torch.float64,)):
        """The policy of an op with kernels on all three kernel backends: Triton's and CUDA's take
        KERNEL_DTYPES, the C++ CPU kernels those and cpu_dtypes (float64 by default, for gradcheck); the
        "cpu" and "cuda" backends call ext_functions of alexnet_kernels._C."""
        return cls(dtypes={"triton": KERNEL_DTYPES, "cuda": KERNEL_DTYPES, "cpu": KERNEL_DTYPES + tuple(cpu_dtypes)},
                   needs={"cpu": tuple(ext_functions), "cuda": tuple(ext_functions)}, auto=auto)

    def supports_dtype(self, backend, dtype):
        backend = self.runs_as.get(backend, backend)
        return backend == "torch" or dtype in self.dtypes.get(backend, ())

    def error(self, backend, device):
        """None if `backend` can run on tensors of `device` here, else why not."""
        if backend in self.runs_as:
            if device.type != backend:
                return "backend %r takes %s tensors, got a %s tensor" % (backend, backend, device.type)
            backend = self.runs_as[backend]
        return backend_error(backend, device, self.needs.get(backend, ()))

    def resolve(self, backend, x, op):
        """The concrete backend that runs `op` on x (or "auto" where the op measures): None means the
        default; "auto" takes the first backend of the device's list that is available and takes x's dtype,
        else "torch".  Raises BackendUnavailableError when the backend asked for cannot run on x."""
        if backend is None:
            backend = default_backend()
        key = (backend, x.device, x.dtype)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = self._resolved[key] = self._resolve(backend, x.device, x.dtype, op)
        return resolved

    def _resolve(self, backend, device, dtype, op):
        _validated(backend, "backend")
        if backend == "auto":
            for b in self.auto.get(device.type, ()):
                if b == self.MEASURED:
                    if any(dtype in ds for ds in self.dtypes.values()):
                        return "auto"
                elif self.supports_dtype(b, dtype) and self.error(b, device) is None:
                    return self.runs_as.get(b, b)
            return "torch"
        err = self.error(backend, device)
        if err is not None:
            raise BackendUnavailableError("%s: backend=%r is not available: %s" % (op, backend, err))
        if not self.supports_dtype(backend, dtype):
            takers = [b for b in self.dtypes if dtype in self.dtypes[b]] + ["torch"]
            raise BackendUnavailableError(
                "%s: backend=%r does not support dtype %s: its kernels take %s; %s runs %s" % (
                    op, backend, dtype, _dtype_names(self.dtypes.get(backend, ())),
                    " or ".join("backend=%r" % b for b in takers), dtype))
        return self.runs_as.get(backend, backend)


def is_cuda_tensor(x):
    return isinstance(x, torch.Tensor) and x.device.type == "cuda"


def check_same_device(op, **tensors):
    """ValueError naming the devices when the tensors given (name=tensor; None skipped) are not all on one
    device: the one check every backend of an op with several tensor inputs shares."""
    device = None
    for t in tensors.values():
        if t is not None:
            if device is None:
                device = t.device
            elif t.device != device:
                raise ValueError("%s: all tensors must be on one device, got %s" % (op, ", ".join(
                    "%s on %s" % (name, t.device) for name, t in tensors.items() if t is not None)))


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
