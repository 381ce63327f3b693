"""Test configuration: on a machine without a GPU the Triton kernels run under TRITON_INTERPRET=1.

The variable must be set before Triton builds any kernel, i.e. before alexnet_kernels is imported."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
