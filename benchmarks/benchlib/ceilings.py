"""The ceilings a row is measured against: the GPU's device-to-device copy bandwidth and bf16 matmul peak (do_bench,
once per session) and, for the CPU pictures, a CPU copy and fp32 matmul.
"""
import statistics
import time

import torch

from .collect import COLLECTOR, GB
from .timing import gpu_time_ms


COPY_BYTES = 2 ** 30  # the copy-bandwidth probe: a 1 GiB fp32 tensor
MATMUL_N = 8192       # the matmul-peak probe: an N x N x N bf16 torch.mm


def gpu_copy_bandwidth_gbps(collector=None):
    """Device-to-device copy bandwidth (GB/s, read + write), measured once per session."""
    c = collector or COLLECTOR
    if c.copy_gbps is None:
        src = torch.randn(COPY_BYTES // 4, device="cuda", dtype=torch.float32)
        dst = torch.empty_like(src)
        ms = gpu_time_ms(lambda: dst.copy_(src))
        c.copy_ms = ms
        c.copy_gbps = 2 * src.nbytes / (ms * 1e-3) / GB
        del src, dst
        torch.cuda.empty_cache()
    return c.copy_gbps


def gpu_matmul_tflops(collector=None):
    """The bf16 matmul peak (TFLOP/s) of this GPU as torch reaches it: do_bench of a MATMUL_N^3 bf16
    torch.mm (cuBLAS) into a preallocated output, 2 N^3 FLOPs; measured once per session."""
    c = collector or COLLECTOR
    if c.matmul_tflops is None:
        a = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
        ms = gpu_time_ms(lambda: torch.mm(a, b, out=out))
        c.matmul_ms = ms
        c.matmul_tflops = 2.0 * MATMUL_N ** 3 / (ms * 1e-3) / 1e12
        del a, b, out
        torch.cuda.empty_cache()
    return c.matmul_tflops


CPU_COPY_BYTES = 2 ** 28   # the CPU ceilings' probes (for the pictures): a 256 MiB fp32 copy and a
CPU_MATMUL_N = 2048        # 2048^3 fp32 torch.mm, medians of CPU_PROBE_RUNS
CPU_PROBE_RUNS = 5


def cpu_ceilings(collector=None):
    """{"copy_gbps", "matmul_tflops"} of this CPU as torch reaches them with its threads (read + write of a
    256 MiB fp32 copy_; a 2048^3 fp32 torch.mm), perf_counter medians, measured once per session -- the
    ceilings drawn in the CPU pictures."""
    c = collector or COLLECTOR
    if c.cpu_ceilings is None:
        def median_s(fn):
            fn()
            times = []
            for _ in range(CPU_PROBE_RUNS):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)
        src = torch.randn(CPU_COPY_BYTES // 4)
        dst = torch.empty_like(src)
        copy_s = median_s(lambda: dst.copy_(src))
        a, b = torch.randn(CPU_MATMUL_N, CPU_MATMUL_N), torch.randn(CPU_MATMUL_N, CPU_MATMUL_N)
        out = torch.empty(CPU_MATMUL_N, CPU_MATMUL_N)
        mm_s = median_s(lambda: torch.mm(a, b, out=out))
        c.cpu_ceilings = {"copy_gbps": 2 * src.nbytes / copy_s / GB,
                          "matmul_tflops": 2.0 * CPU_MATMUL_N ** 3 / mm_s / 1e12,
                          "probe": "fp32 copy_ of %d MiB (read + write) and %d^3 fp32 torch.mm, %d threads, "
                                   "perf_counter medians of %d" % (CPU_COPY_BYTES // 2 ** 20, CPU_MATMUL_N,
                                                                   torch.get_num_threads(), CPU_PROBE_RUNS)}
    return c.cpu_ceilings
