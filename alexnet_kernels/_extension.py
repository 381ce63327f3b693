"""Lazy access to the compiled extension ``alexnet_kernels._C``.

``_C`` is built on torch's stable C ABI (targeting torch 2.11) as a limited-API (abi3) Python module:
importing it registers its kernels as the torch.library operators ``torch.ops.alexnet_kernels_C.<name>``;
the module itself holds only ``build_info()``.  :func:`load` returns an object whose attributes are those
operators (``load().lrn_forward(x, y, ...)``), so callers do not depend on how the kernels are bound.

Importing alexnet_kernels never fails because of the extension: if ``_C`` is missing or does not load
(no CUDA runtime, a torch older than the ABI target, ...), the package warns once with the reason and the
Triton and torch backends keep working.
"""
import importlib
import os
import threading
import warnings

OPS_NAMESPACE = "alexnet_kernels_C"

_lock = threading.Lock()
_state = {"loaded": False, "module": None, "error": None, "build_info": None}


def _source_checkout_dir():
    """The checkout alexnet_kernels was imported from, or None.  Python puts the current directory first on
    sys.path, so inside a checkout `import alexnet_kernels` finds the source tree, which has no compiled
    extension unless it was built in place -- reinstalling the package does not change that."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    checkout = os.path.dirname(package_dir)
    return checkout if os.path.isfile(os.path.join(checkout, "setup.py")) else None


def _fix_advice():
    """What to do about a missing extension: from a checkout, run elsewhere or build in place; else reinstall."""
    checkout = _source_checkout_dir()
    if checkout is not None:
        return ("alexnet_kernels was imported from the source checkout %s (Python puts the current folder first "
                "on sys.path), which holds no built extension: run from another folder to use the installed "
                "package, or build the checkout in place with `pip install -v --no-build-isolation -e .`"
                % checkout)
    return "reinstall with `pip install .` to build it"


class CompiledKernels:
    """The extension's operators as attributes (``torch.ops.alexnet_kernels_C.<name>``) and its
    ``build_info()``; a name the loaded library does not define raises AttributeError (so ``hasattr``
    tells an extension built before an op existed)."""

    def __init__(self, module):
        import torch
        self._module = module
        self._ops = getattr(torch.ops, OPS_NAMESPACE)
        self.__file__ = getattr(module, "__file__", None)

    def build_info(self):
        return self._module.build_info()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            # The overload itself, not the packet: the call then skips overload resolution (~0.2 us).
            op = getattr(self._ops, name).default
        except (AttributeError, RuntimeError):
            raise AttributeError("alexnet_kernels._C (%s) has no operator %r" % (self.__file__, name)) from None
        setattr(self, name, op)  # later lookups skip torch.ops' resolution
        return op

    def __repr__(self):
        return "<alexnet_kernels._C: torch.ops.%s, %s>" % (OPS_NAMESPACE, self.__file__)


def load():
    """The extension's operators (a :class:`CompiledKernels`), or None (the reason is in :func:`load_error`)."""
    if not _state["loaded"]:
        with _lock:
            if not _state["loaded"]:
                try:
                    import torch  # noqa: F401  (_C links against torch's libraries)
                    module = importlib.import_module("alexnet_kernels._C")
                    kernels = CompiledKernels(module)
                    _state["build_info"] = dict(kernels.build_info())
                    _state["module"] = kernels
                except Exception as exc:  # ImportError, OSError from a bad .so, ...
                    advice = _fix_advice()
                    _state["error"] = "%s: %s; %s" % (type(exc).__name__, exc, advice)
                    warnings.warn(
                        "alexnet_kernels: the compiled extension alexnet_kernels._C is unavailable (%s: %s); "
                        "the 'cpu', 'cuda' and cuDNN backends are disabled, 'triton' and 'torch' still "
                        "work. To fix: %s." % (type(exc).__name__, exc, advice), RuntimeWarning, stacklevel=3)
                _state["loaded"] = True
    return _state["module"]


def load_error():
    load()
    return _state["error"]


def build_info():
    """What ``_C`` was built with (torch, CUDA, archs, compiled backends), or None."""
    load()
    info = _state["build_info"]
    return dict(info) if info is not None else None
