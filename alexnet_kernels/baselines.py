"""Baselines for benchmarks and tests only -- not part of the supported API.

cudnn_lrn(x, size, alpha, beta, k): cuDNN's cross-channel LRN (cudnnLRNCrossChannelForward/Backward)
through the extension, with autograd (saves x and y, as cuDNN's backward reads x, y and dy).
cuDNN divides alpha by n like PyTorch, but accepts only 1 <= n <= 16, k >= 1e-5, beta >= 0.01, and for
even n its window is [c - n/2 + 1, c + n/2], PyTorch's [c - n/2, c + n/2 - 1]: for odd n the two agree.
"""
import torch

from . import _extension

__all__ = ["cudnn_lrn", "cudnn_lrn_error"]


def cudnn_lrn_error(x=None):
    """None if the cuDNN baseline can run (on x, if given; else on this machine's GPU), else why not."""
    ext = _extension.load()
    if ext is None:
        return "alexnet_kernels._C is unavailable (%s)" % _extension.load_error()
    if not _extension.build_info()["with_cudnn"]:
        return "alexnet_kernels._C was built without the cuDNN wrapper (no cudnn.h at build time)"
    if x is None:
        if not torch.cuda.is_available():
            return "no CUDA device is visible (cuDNN LRN takes cuda tensors only)"
    elif x.device.type != "cuda" or x.dim() != 4:
        return "cuDNN LRN takes 4-D cuda tensors, got a %d-D %s tensor" % (x.dim(), x.device.type)
    return None


class _CudnnLRN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        y = _extension.load().cudnn_lrn_forward(x, size, alpha, beta, k)
        ctx.save_for_backward(x, y)
        ctx.params = (size, alpha, beta, k)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y = ctx.saved_tensors
        dy = dy.contiguous(memory_format=torch.channels_last) if not x.is_contiguous() else dy.contiguous()
        return _extension.load().cudnn_lrn_backward(x, y, dy, *ctx.params), None, None, None, None


def cudnn_lrn(x, size, alpha=1e-4, beta=0.75, k=1.0):
    err = cudnn_lrn_error(x)
    if err is not None:
        raise RuntimeError("cudnn_lrn: " + err)
    if not 1 <= size <= 16:
        raise ValueError("cudnn_lrn: cuDNN accepts 1 <= size <= 16, got %d" % size)
    return _CudnnLRN.apply(x, int(size), float(alpha), float(beta), float(k))
