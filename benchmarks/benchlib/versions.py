"""The software and device a measurement ran on, read with the standard library and torch alone: results.py puts it
in every results file, and benchmarks/tools/gpu_check.py runs this file's text in a subprocess (its orchestrator
never initialises CUDA), so it imports nothing of the package it describes except inside probe().
"""
import platform
import subprocess

import torch


def driver_version():
    """The NVIDIA driver's version (nvidia-smi), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def probe():
    """{python, torch, cuda, cudnn, triton, device (None without a GPU), the GPU's compute capability, SMs, memory,
    count and driver, alexnet_kernels' version, file and build_info()}."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        info["cudnn"] = None
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as exc:
        info["triton"] = "unavailable (%s)" % exc
    info["device"] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, compute_capability="sm_%d%d" % (p.major, p.minor),
                    sm_count=p.multi_processor_count, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1),
                    gpus=torch.cuda.device_count(), driver=driver_version())
    try:
        import alexnet_kernels
        info["alexnet_kernels"] = alexnet_kernels.__version__
        info["alexnet_kernels_file"] = alexnet_kernels.__file__
        info["alexnet_kernels_build"] = alexnet_kernels.build_info()
    except Exception as exc:
        info["alexnet_kernels"] = "import failed: %s: %s" % (type(exc).__name__, exc)
    return info
