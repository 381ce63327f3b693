"""alexnet-kernels: hand-optimised Triton and C++/CUDA kernels for AlexNet's building blocks.

    import alexnet_kernels.lrn as lrn
    y = lrn.local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0)
    model = alexnet_kernels.optimize(model)   # swap our modules into any model, same state_dict

The compiled extension (alexnet_kernels._C: C++ CPU and CUDA kernels, the cuDNN baseline) is loaded
on first use; if it is missing the package still imports, warns once with the reason, and the Triton
and torch backends keep working.  `python -m alexnet_kernels` prints versions, GPU and every backend's
status.
"""
from ._backends import (BACKENDS, BackendUnavailableError, default_backend,  # noqa: F401
                        set_default_backend)
from . import conv, dropout, fused, lrn, pool  # noqa: F401  (register the alexnet_kernels:: custom ops)
# The function shadows its submodule's name on the package; `from alexnet_kernels.optimize import optimize`
# still works.
from .optimize import optimize  # noqa: F401

__version__ = "0.1.0"


def build_info():
    """What alexnet_kernels._C was built with (torch, CUDA, archs, backends), or None if unavailable."""
    from . import _extension
    return _extension.build_info()
