"""The CUDA kernels' device code, run on the CPU by csrc/emulate/lrn_cuda_emulator.cpp.

Each CUDA block runs as real threads with __syncthreads as a barrier, on NaN-filled shared memory, with the
kernels' own launch planning; it checks forward and backward against a float64 reference for fp32/fp16/bf16,
both layouts, misaligned pointers, n = 1..66 (tiled and fallback kernels). This is how CI, which has no GPU,
covers the CUDA path's indexing, halos and barriers; the GPU suite in test_lrn.py runs the real thing."""
import os
import re
import shutil
import subprocess

import pytest
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "csrc", "emulate", "lrn_cuda_emulator.cpp")


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs a C++20 compiler (g++)")
def test_cuda_kernels_under_the_host_emulator(tmp_path):
    if not os.path.isfile(SOURCE):
        pytest.skip("csrc/ is not in this tree (installed package without sources)")
    exe = str(tmp_path / "lrn_emu")
    build = subprocess.run(
        [os.environ.get("CXX", "g++"), "-std=c++20", "-O2", "-I" + os.path.join(ROOT, "csrc"),
         "-I" + cpp_extension.include_paths()[0], SOURCE, "-o", exe, "-lpthread"],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([exe, "quick"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    worst = dict((m.group(1), (float(m.group(2)), float(m.group(3)))) for m in re.finditer(
        r"worst (\w+): fwd ([\d.e+-]+) bwd ([\d.e+-]+)", run.stdout))
    assert set(worst) == {"float32", "float16", "bfloat16"}, run.stdout[-2000:]
    assert max(worst["float32"]) <= 1e-5
    assert max(worst["float16"]) <= 2e-3 and max(worst["bfloat16"]) <= 1.6e-2
