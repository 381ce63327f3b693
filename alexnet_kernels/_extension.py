"""Lazy access to the compiled extension ``alexnet_kernels._C``.

Importing alexnet_kernels never fails because of the extension: if ``_C`` is missing or does not load
(built against another torch, no CUDA runtime, ...), the package warns once with the reason and the
Triton and torch backends keep working.
"""
import importlib
import os
import threading
import warnings

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
                "package, or build the checkout in place with `pip install --no-build-isolation -e .`"
                % checkout)
    return "reinstall with `pip install --no-build-isolation .` to build it"


def load():
    """The ``_C`` module, or None (the reason is in :func:`load_error`)."""
    if not _state["loaded"]:
        with _lock:
            if not _state["loaded"]:
                try:
                    import torch  # noqa: F401  (_C links against torch's libraries)
                    module = importlib.import_module("alexnet_kernels._C")
                    _state["build_info"] = dict(module.build_info())
                    _state["module"] = module
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
