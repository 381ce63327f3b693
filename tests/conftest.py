"""Test configuration: on a machine without a GPU the Triton kernels run under TRITON_INTERPRET=1.

The variable must be set before Triton builds any kernel, i.e. before alexnet_kernels is imported.
ALEXNET_KERNELS_AUTOTUNE=0: the conv kernels use their first tile configuration instead of autotuning (the
search compiles ~10 configurations per kernel, shape and dtype: many minutes on a GPU).  The tests check
the first configuration; the others differ only in block sizes, warps and stages, and all of them are compiled
for sm_80/sm_90 by test_triton_compile.py's sweep.  The benchmarks autotune.

ALEXNET_KERNELS_TEST_TIMEOUT=seconds (used by benchmarks/tools/gpu_check.sh on the GPU, where pytest-timeout is not
installed): a test running longer raises TimeoutError (SIGALRM in the main thread; a kernel that never returns
is not interrupted, the next Python bytecode is)."""
import os
import signal

import pytest
import torch

# The shared checks in common.py assert: pytest explains their failures as it does the tests' own asserts.
pytest.register_assert_rewrite("common")

os.environ.setdefault("ALEXNET_KERNELS_AUTOTUNE", "0")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


TEST_TIMEOUT_S = float(os.environ.get("ALEXNET_KERNELS_TEST_TIMEOUT", "0") or 0)


if TEST_TIMEOUT_S > 0 and hasattr(signal, "setitimer"):
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(item):
        def on_alarm(signum, frame):
            raise TimeoutError("%s ran longer than ALEXNET_KERNELS_TEST_TIMEOUT=%g s" % (item.nodeid, TEST_TIMEOUT_S))

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT_S)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
