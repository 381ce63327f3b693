"""Test configuration: on a machine without a GPU the Triton kernels run under TRITON_INTERPRET=1.

The variable must be set before Triton builds any kernel, i.e. before alexnet_kernels is imported.
ALEXNET_KERNELS_AUTOTUNE=0: the conv kernels use their first tile configuration instead of autotuning (the
search compiles ~10 configurations per kernel, shape and dtype: many minutes on a GPU).  The tests check
the first configuration; the others differ only in block sizes, warps and stages, and all of them are compiled
for sm_80/sm_90 by test_triton_compile.py's sweep.  The benchmarks autotune."""
import os

import torch

os.environ.setdefault("ALEXNET_KERNELS_AUTOTUNE", "0")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
