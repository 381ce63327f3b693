"""`python -m alexnet_kernels`: versions, GPU, build metadata, and every backend's status."""
import platform
import sys

import torch

import alexnet_kernels
from alexnet_kernels import _backends, _extension, baselines


def main():
    print("alexnet_kernels %s" % alexnet_kernels.__version__)
    print("python %s, torch %s (CUDA %s, cuDNN %s)" % (
        platform.python_version(), torch.__version__, torch.version.cuda,
        torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None))
    try:
        import triton
        print("triton %s%s" % (triton.__version__, " (TRITON_INTERPRET=1)" if _backends.triton_interpreting() else ""))
    except Exception as exc:
        print("triton: unavailable (%s)" % exc)
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print("GPU %d: %s, sm_%d%d, %d SMs, %.1f GiB" % (i, p.name, p.major, p.minor,
                                                           p.multi_processor_count, p.total_memory / 2**30))
    else:
        print("GPU: none visible")
    info = _extension.build_info()
    if info is None:
        print("alexnet_kernels._C: unavailable (%s)" % _extension.load_error())
    else:
        print("alexnet_kernels._C: %s, ABI target torch %s (loads under torch >= %s), %s; built with torch %s, "
              "loaded under torch %s: %s" % (info.get("abi", "?"), info.get("abi_target", "?"),
                                             info.get("abi_target", "?"), info.get("python_abi", "?"),
                                             info.get("torch_version", "?"), torch.__version__,
                                             _extension.load().__file__))
        print("alexnet_kernels._C built with: " + ", ".join("%s=%s" % kv for kv in sorted(info.items())))
    print("default backend: %s ($%s)" % (_backends.default_backend(), _backends.ENV_VAR))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devices:
        for name, err in _backends.status(dev).items():
            print("  %-4s %-7s %s" % (dev.type, name, "ok" if err is None else "not supported because " + err))
    # Per op: what the C++ backends mean where an op has no kernel of its own there.
    print("  conv2d_relu: backend 'cuda' is the CUDA C++ implicit GEMM (csrc/conv_cuda.cu, cuda tensors); 'cpu' "
          "runs torch's CPU convolution (there is no C++ CPU convolution of our own), as 'auto' does on cpu; "
          "'auto' on cuda times Triton, CUDA C++ and cuDNN once per shape")
    err = baselines.cudnn_lrn_error()
    print("  cuDNN LRN baseline (benchmarks and tests only): %s" % ("ok" if err is None else "unavailable: " + err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
