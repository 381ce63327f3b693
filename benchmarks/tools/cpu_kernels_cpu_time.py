"""Before/after of the max-pool and fused forwards in CPU time of one thread (time.thread_time, min over calls):
a check that holds up on a machine too loaded for wall-clock medians (other jobs' load inflates wall time, not
this thread's CPU time, apart from cache sharing). Builds the same throwaway extensions as
cpu_kernels_before_after.py (this tree = "after", /work/main = "before"), checks "after" against torch (max-pool,
exact) and against "before" (fused: values and offsets bit for bit), and prints times in ms.

    PYTHONPATH=$PWD python benchmarks/tools/cpu_kernels_cpu_time.py 1
"""
import sys, time, statistics, torch, importlib.util, glob
sys.path.insert(0, "benchmarks/tools")
import cpu_kernels_before_after as b
after = b.build_kernels(".", "after")
before = b.build_kernels("/work/main", "before")
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
for N in (1, 32):
    for cl in (False, True):
        x = torch.randn(N, 96, 55, 55)
        if cl: x = x.contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if cl else torch.contiguous_format
        ys = [torch.empty(N, 96, 27, 27).contiguous(memory_format=fmt) for _ in range(2)]
        os_ = [torch.empty(N, 96, 27, 27, dtype=torch.uint8).contiguous(memory_format=fmt) for _ in range(2)]
        res = {}
        for name, lib, y, o in (("after", after, ys[0], os_[0]), ("before", before, ys[1], os_[1])):
            lib.max_pool2d_forward(x, y, o, cl)
            t = []
            for _ in range(5 if N == 32 else 30):
                t0 = time.thread_time(); lib.max_pool2d_forward(x, y, o, cl); t.append(time.thread_time() - t0)
            res[name] = min(t) * 1e3
        ref = torch.nn.functional.max_pool2d(x, 3, 2)
        print(N, cl, {k: round(v, 3) for k, v in res.items()}, torch.equal(ys[0], ref), torch.equal(os_[0], os_[1]))
for N, C, H in ((1, 256, 27), (8, 256, 27), (4, 96, 55)):
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format
        x = torch.randn(N, C, H, H).contiguous(memory_format=fmt)
        OH = (H - 3) // 2 + 1
        res, outs = {}, {}
        for name, lib in (("after", after), ("before", before)):
            y = torch.empty(N, C, OH, OH).contiguous(memory_format=fmt); o = torch.empty(N, C, OH, OH, dtype=torch.uint8).contiguous(memory_format=fmt)
            lib.relu_lrn_max_pool2d_forward(x, y, o, 5, 1e-4, 0.75, 2.0, cl)
            t = []
            for _ in range(5):
                t0 = time.thread_time(); lib.relu_lrn_max_pool2d_forward(x, y, o, 5, 1e-4, 0.75, 2.0, cl); t.append(time.thread_time() - t0)
            res[name] = min(t) * 1e3; outs[name] = (y, o)
        print("fused", N, C, H, cl, {k: round(v, 3) for k, v in res.items()}, torch.equal(outs["after"][0], outs["before"][0]), torch.equal(outs["after"][1], outs["before"][1]))
