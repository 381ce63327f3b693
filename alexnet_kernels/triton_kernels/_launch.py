"""The one place the package's Triton kernels are launched from (tests/test_launch.py checks that every
launcher in triton_kernels/ calls launch() and nothing else launches).

Triton launches on the *current* CUDA device and that device's current stream (its JIT reads
torch.cuda.current_device()), not on the device of the tensors it is given.  launch() makes the tensors'
device current for the launch when it is not already (a comparison of two ints when it is: no context
switch), so the kernel runs on the tensors' device and that device's current stream -- the stream torch's
own ops on those tensors use -- from any thread.  Tensors on more than one device raise a ValueError naming
the devices.

Autotuned kernels (triton.autotune with more than one config) are launched under one lock per kernel:
Triton's Autotuner keeps the call's arguments on the shared object (self.nargs) while it benchmarks, so two
threads (autograd runs each device's backward on its own thread) tuning or launching the same kernel at
the same moment would corrupt each other's state.  The lock is held for the launch only (microseconds once
tuned); the first call of a new key benchmarks under it, so a second thread waits for the tuning instead
of racing it.
"""
import threading

import torch
from triton.runtime.autotuner import Autotuner

_locks = {}
_locks_guard = threading.Lock()


def kernel_name(kernel):
    fn = kernel
    while hasattr(fn, "fn"):  # an Autotuner wraps a JITFunction, which wraps the Python function
        fn = fn.fn
    return getattr(fn, "__name__", repr(kernel))


def tensors_device(kernel, args):
    """The CUDA device index of the tensors among args (-1: cpu, meta, or no tensor); ValueError if they are
    on more than one device.  The tensors are the leading arguments -- every kernel here takes its pointers
    first (tests/test_launch.py checks it) -- so the scan stops at the first other argument: a few hundred
    nanoseconds per launch."""
    index, first = -1, None
    for a in args:
        if not isinstance(a, torch.Tensor):
            break
        i = a.get_device()
        if first is None:
            index, first = i, a
        elif i != index or (i < 0 and a.is_meta != first.is_meta):  # cpu and meta are both -1
            devices = sorted({str(t.device) for t in args if isinstance(t, torch.Tensor)})
            raise ValueError("%s: the tensors of one launch must be on one device, got tensors on %s"
                             % (kernel_name(kernel), " and ".join(devices)))
    return index


def tuning_lock(kernel):
    """The lock an autotuned kernel is launched under, or None (a plain kernel, or a single config: then the
    Autotuner benchmarks nothing and reads no shared state)."""
    if not isinstance(kernel, Autotuner) or len(kernel.configs) < 2:
        return None
    lock = _locks.get(kernel)
    if lock is None:
        with _locks_guard:
            lock = _locks.setdefault(kernel, threading.RLock())
    return lock


def launch(kernel, grid, *args, **kwargs):
    """kernel[grid](*args, **kwargs) on the device of the tensors in args, on that device's current stream."""
    device = tensors_device(kernel, args)
    if device >= 0 and device != torch.cuda.current_device():
        with torch.cuda.device(device):
            return _launch(kernel, grid, args, kwargs)
    return _launch(kernel, grid, args, kwargs)


def _launch(kernel, grid, args, kwargs):
    lock = tuning_lock(kernel)
    if lock is None:
        return kernel[grid](*args, **kwargs)
    with lock:
        return kernel[grid](*args, **kwargs)
