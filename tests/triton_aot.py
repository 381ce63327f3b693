"""Ahead-of-time compilation of the package's Triton kernels for GPU targets, on a machine without a GPU.

Used by tests/test_triton_compile.py, which runs this file as a script in a subprocess with TRITON_INTERPRET
unset: under the interpreter @triton.jit returns InterpretedFunction objects, which triton.compile cannot
lower, and conv.py's autotune lists shrink to one config.

How the compile jobs are found: each AlexNet case calls the real launcher (triton_kernels.*) with tensors on
the "meta" device while every kernel object of the four modules is swapped for a recorder, so the recorded
arguments are exactly what the launcher would pass on a GPU.  Each recorded launch is turned into the JIT's
specialisation (triton's own specialize function: an int equal to 1 becomes a constexpr, ints and pointers
divisible by 16 get tt.divisibility 16, ints beyond int32 become i64; none of that for the parameters a kernel
lists in do_not_specialize), then compiled with triton.compile for sm_80 and sm_90 -- once per autotune config
when all configs are asked for, else with the first one.  Besides AlexNet's shapes, the "ones" cases launch
every kernel with every size argument that can be 1 equal to 1 (one channel, one pixel, one element, one row,
dropout's threshold == 1): each such argument becomes a compile-time constant, which breaks code that calls
a method on it (threshold.to(...) did).

    python tests/triton_aot.py OUT.json [--all] [--jobs N]
writes {"skip": reason} or {"results": [...], "wall_s": ...} to OUT.json.
"""
import argparse
import contextlib
import importlib
import io
import json
import os
import re
import sys
import time

MODULES = ("lrn", "pool", "dropout", "conv")
# Kernels under benchmarks/ (built on the package's helpers): compiled and checked like the package's.
BENCHMARK_MODULES = ("pool_recompute",)
BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
# Targets: (compute capability, max dynamic shared memory per block in bytes).
TARGETS = {"sm_80": (80, 166912), "sm_90": (90, 232448)}
DTYPES = ("fp32", "fp16", "bf16")
N = 128  # batch

# AlexNet, one tower (alexnet/model.py): (Cin, Cout, kernel, stride, padding, input H = W).
CONV_LAYERS = {"conv1": (3, 48, 11, 4, 0, 227), "conv2": (48, 128, 5, 1, 2, 27),
               "conv3": (256, 192, 3, 1, 1, 13), "conv4": (192, 192, 3, 1, 1, 13),
               "conv5": (192, 128, 3, 1, 1, 13)}
LRN = (5, 1e-4, 0.75, 2.0)
POOL = ((3, 3), (2, 2), (0, 0))
# The activations the LRN / pool kernels see: (C, H, W) after conv1, conv2 and conv5 of one tower.
POOL_INPUTS = {"pool1": (48, 55, 55), "pool2": (128, 27, 27), "pool5": (128, 13, 13)}
FC = (128, 2048)  # (batch, units) of fc6/fc7


def _kernels_module(name):
    if name in BENCHMARK_MODULES:
        if BENCHMARKS_DIR not in sys.path:
            sys.path.insert(0, BENCHMARKS_DIR)
        return importlib.import_module(name)
    return importlib.import_module("alexnet_kernels.triton_kernels." + name)


def _torch_dtype(name):
    import torch
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


# --- the cases: real launcher calls on meta tensors -----------------------------------------------------

def _t(shape, dtype, channels_last=False):
    import torch
    fmt = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device="meta", memory_format=fmt)


def cases(full):
    """[(case label, fn(dtype name) -> None that calls launchers)]; `full` adds more layers and layouts."""
    import torch
    lrn, pool, dropout, conv = (_kernels_module(m) for m in MODULES)
    pool_recompute = _kernels_module("pool_recompute")
    layouts = (True, False) if full else (True,)  # channels_last (the fast path), then NCHW
    out = []

    def tag(cl):
        return "cl" if cl else "nchw"

    for cl in layouts:
        C, H, W = POOL_INPUTS["pool1"]

        def lrn_case(d, cl=cl, C=C, H=H, W=W):
            dt = _torch_dtype(d)
            x = _t((N, C, H, W), dt, cl)
            lrn.lrn_forward(x, torch.empty_like(x), *LRN, channels_last=cl)
            lrn.lrn_backward(x, torch.empty_like(x), torch.empty_like(x), *LRN, channels_last=cl)
        out.append((f"lrn1/{tag(cl)}", lrn_case))

        for name in (("pool1", "pool5") if full else ("pool1",)):
            C, H, W = POOL_INPUTS[name]

            def pool_case(d, cl=cl, C=C, H=H, W=W):
                dt = _torch_dtype(d)
                x = _t((N, C, H, W), dt, cl)
                OH, OW = (H - 3) // 2 + 1, (W - 3) // 2 + 1
                y = _t((N, C, OH, OW), dt, cl)
                off = _t((N, C, OH, OW), torch.uint8, cl)
                pool.max_pool2d_forward(x, y, off, *POOL)
                pool.max_pool2d_backward(y, off, torch.empty_like(x), *POOL)
                pool.relu_lrn_max_pool2d_forward(x, y, off, *LRN, *POOL)
                pool.relu_lrn_max_pool2d_backward(x, y, off, torch.empty_like(x), *LRN, *POOL)
                pool_recompute.max_pool2d_backward_recompute(x, y, torch.empty_like(x), *POOL)
            out.append((f"{name}/{tag(cl)}", pool_case))

    def dropout_case(d):
        dt = _torch_dtype(d)
        M, U = FC
        seed = _t((1,), torch.int64)
        x = _t((M * U,), dt)
        dropout.dropout(x, torch.empty_like(x), seed, 0.5)
        h, b = _t((M, U), dt), _t((U,), dt)
        dropout.bias_relu_dropout_forward(h, b, torch.empty_like(h), seed, 0.5)
        dropout.bias_relu_dropout_backward(h, torch.empty_like(h), torch.empty_like(h), seed, 0.5)
        h = _t((64 * M, U), dt)  # a large batch: the backward's programs loop over row tiles (ROW_STEPS > 1)
        dropout.bias_relu_dropout_backward(h, torch.empty_like(h), torch.empty_like(h), seed, 0.5)
    out.append(("fc6", dropout_case))

    # Every size that can be 1 equal to 1: such int arguments are specialised to compile-time constants.
    def lrn_ones_case(d):
        x = _t((1, 1, 1, 1), _torch_dtype(d))
        lrn.lrn_forward(x, torch.empty_like(x), *LRN, channels_last=False)
        lrn.lrn_backward(x, torch.empty_like(x), torch.empty_like(x), *LRN, channels_last=False)
    out.append(("lrn/ones", lrn_ones_case))

    # The old LRN backward ("v1", kept as a benchmark provider) and the wide windows: v2's rolled gathers
    # (n = 25) and v1's rolled loop (n = 41, beyond v2's widest halo).
    def lrn_variants_case(d):
        x = _t((N, 48, 27, 27), _torch_dtype(d))
        for size, backward in ((5, lrn.lrn_backward_v1), (25, lrn.lrn_backward), (41, lrn.lrn_backward)):
            backward(x, torch.empty_like(x), torch.empty_like(x), size, *LRN[1:], channels_last=False)
    out.append(("lrn/variants", lrn_variants_case))

    def pool_ones_case(d):
        dt = _torch_dtype(d)
        x = _t((1, 1, 3, 3), dt)  # one channel, one output pixel
        y, off = _t((1, 1, 1, 1), dt), _t((1, 1, 1, 1), torch.uint8)
        pool.max_pool2d_forward(x, y, off, *POOL)
        pool.max_pool2d_backward(y, off, torch.empty_like(x), *POOL)
        pool.relu_lrn_max_pool2d_forward(x, y, off, *LRN, *POOL)
        pool.relu_lrn_max_pool2d_backward(x, y, off, torch.empty_like(x), *LRN, *POOL)
        pool_recompute.max_pool2d_backward_recompute(x, y, torch.empty_like(x), *POOL)
    out.append(("pool/ones", pool_ones_case))

    # A plane of more than 2**31 outputs (forward) or inputs (backward): the plane's size arrives as i64 and
    # the flat positions are formed in 64 bits.  One dtype: the index math does not depend on it.
    def pool_huge_plane_case(d):
        if d != "fp16":
            return
        dt = _torch_dtype(d)
        x = _t((1, 1, 92683, 92683), dt)  # 46341 x 46341 outputs
        y, off = _t((1, 1, 46341, 46341), dt), _t((1, 1, 46341, 46341), torch.uint8)
        pool.max_pool2d_forward(x, y, off, *POOL)
        pool.relu_lrn_max_pool2d_forward(x, y, off, *LRN, *POOL)
        x = _t((1, 1, 46342, 46342), dt)  # 46342**2 inputs
        y, off = _t((1, 1, 23170, 23170), dt), _t((1, 1, 23170, 23170), torch.uint8)
        pool.max_pool2d_backward(y, off, torch.empty_like(x), *POOL)
        pool.relu_lrn_max_pool2d_backward(x, y, off, torch.empty_like(x), *LRN, *POOL)
        pool_recompute.max_pool2d_backward_recompute(x, y, torch.empty_like(x), *POOL)
    out.append(("pool/huge-plane", pool_huge_plane_case))

    def dropout_ones_case(d):
        dt = _torch_dtype(d)
        seed = _t((1,), torch.int64)
        p_threshold_1 = 1.0 / (1 << 24)  # threshold = round(p * 2**24) == 1
        assert dropout._threshold_scale(p_threshold_1)[0] == 1
        for numel in (1, 4096):
            x = _t((numel,), dt)
            dropout.dropout(x, torch.empty_like(x), seed, p_threshold_1)
        for shape in ((1, 1), (1, 4), (3, 1)):
            h, b = _t(shape, dt), _t(shape[1:], dt)
            dropout.bias_relu_dropout_forward(h, b, torch.empty_like(h), seed, p_threshold_1)
            dropout.bias_relu_dropout_backward(h, torch.empty_like(h), torch.empty_like(h), seed, p_threshold_1)
    out.append(("dropout/ones", dropout_ones_case))

    def conv_ones_case(d):
        dt = _torch_dtype(d)
        x, w = _t((1, 1, 1, 1), dt), _t((1, 1, 1, 1), dt)  # one image, channel, pixel, tap
        y = _t((1, 1, 1, 1), dt)
        conv.conv2d_relu_forward(x, w, _t((1,), dt), y, (1, 1), (0, 0), 1, True)
        conv.conv2d_relu_dgrad(torch.empty_like(y), y, w, torch.empty_like(x), (1, 1), (0, 0), 1, True)
        conv.conv2d_relu_wgrad(torch.empty_like(y), y, x, w.shape, (1, 1), (0, 0), 1, True)
        conv.relu_mask_bias_grad(torch.empty_like(y), y, torch.empty_like(y))
    out.append(("conv/ones", conv_ones_case))

    # conv3, conv4 and conv5 share their specialisation (3x3/s1/p1, channel counts divisible by 16), so the
    # full run compiles them once; NCHW outputs and exact fp32 ("ieee", TF32 off) only for conv3.
    conv_cases = ([(layer, True) for layer in CONV_LAYERS] + [("conv3", False)] if full
                  else [("conv1", True), ("conv3", True)])
    for layer, cl in conv_cases:
        def conv_case(d, layer=layer, cl=cl):
            allow_tf32 = d != "fp32-ieee"
            dt = _torch_dtype(d.split("-")[0])
            cin, cout, k, s, p, hw = CONV_LAYERS[layer]
            ohw = (hw + 2 * p - k) // s + 1
            x = _t((N, cin, hw, hw), dt, True)  # ops/conv.py hands the kernels channels_last x, w
            w = _t((cout, cin, k, k), dt, True)
            y = _t((N, cout, ohw, ohw), dt, cl)  # y, dy, dx: torch's layout rule for conv outputs
            conv.conv2d_relu_forward(x, w, _t((cout,), dt), y, (s, s), (p, p), 1, allow_tf32)
            if layer != "conv1":  # no gradient w.r.t. the image
                conv.conv2d_relu_dgrad(torch.empty_like(y), y, w, _t(x.shape, dt, cl), (s, s), (p, p), 1,
                                       allow_tf32)
            conv.conv2d_relu_wgrad(torch.empty_like(y), y, x, w.shape, (s, s), (p, p), 1, allow_tf32)
            conv.relu_mask_bias_grad(torch.empty_like(y), y, torch.empty_like(y))
        out.append((f"{layer}/{tag(cl)}", conv_case))
    return out


# --- recording launches ----------------------------------------------------------------------------------

class _Recorder:
    """Stands in for a JITFunction / Autotuner in its module while a launcher runs: kernel[grid](...)."""

    def __init__(self, module, name, obj, log):
        self.module, self.name, self.obj, self.log = module, name, obj, log

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.log.append((self.module, self.name, self.obj, args, kwargs))
        return launch

    def __getattr__(self, attr):  # launchers may read e.g. .configs
        return getattr(self.obj, attr)


def _kernel_objects(module):
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction
    return {k: v for k, v in vars(module).items() if isinstance(v, (JITFunction, Autotuner))}


def launchable_kernels():
    """module.kernel of every kernel the modules launch: the @triton.jit functions named *_kernel (the
    modules' convention; the rest are device helpers) and the functions behind autotuned wrappers."""
    from triton.runtime.autotuner import Autotuner
    names = set()
    for m in MODULES + BENCHMARK_MODULES:
        mod = _kernels_module(m)
        for obj in _kernel_objects(mod).values():
            fn = obj.fn if isinstance(obj, Autotuner) else obj
            if isinstance(obj, Autotuner) or fn.__name__.endswith("_kernel"):
                names.add(f"{mod.__name__}.{fn.__name__}")
    return names


@contextlib.contextmanager
def recording(log):
    saved = []
    try:
        for m in MODULES + BENCHMARK_MODULES:
            mod = _kernels_module(m)
            for name, obj in _kernel_objects(mod).items():
                saved.append((mod, name, obj))
                setattr(mod, name, _Recorder(mod.__name__, name, obj, log))
        yield
    finally:
        for mod, name, obj in saved:
            setattr(mod, name, obj)


def _specialize(value, specialize=True, align=True):
    """(signature type, divisible by 16) as the JIT's launch would make them; specialize / align False for the
    parameters a kernel lists in do_not_specialize / do_not_specialize_on_alignment."""
    try:
        from triton._C.libtriton import native_specialize_impl
        from triton.backends.compiler import BaseBackend
    except ImportError:  # older triton: a re-implementation of the same rules
        native_specialize_impl = None
    if native_specialize_impl is not None:
        try:
            ty, attr = native_specialize_impl(BaseBackend, value, False, specialize, align)
            return ty, attr == "D"
        except TypeError:  # another signature in this triton version
            pass
    if hasattr(value, "data_ptr"):
        names = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "uint8": "u8", "int64": "i64",
                 "int32": "i32"}
        return "*" + names[str(value.dtype).split(".")[-1]], specialize and align and value.data_ptr() % 16 == 0
    if isinstance(value, bool):
        return "i1", False
    if isinstance(value, int):
        if value == 1 and specialize:
            return "constexpr", False
        return ("i32" if -2**31 <= value < 2**31 else "i64"), specialize and align and value % 16 == 0
    if isinstance(value, float):
        return "fp32", False
    if value is None:
        return "constexpr", False
    raise TypeError(f"cannot specialise {value!r}")


OPTION_KEYS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


def jobs_of_launch(launch, all_configs):
    """Compile jobs (plain dicts, JSON-able) for one recorded launch: one per autotune config (or the first)."""
    from triton.runtime.autotuner import Autotuner
    module, name, obj, args, kwargs = launch
    if isinstance(obj, Autotuner):
        fn, configs = obj.fn, list(obj.configs)
        if not all_configs:
            configs = configs[:1]
    else:
        fn, configs = obj, [None]
    params = fn.params
    jobs = []
    for cfg in configs:
        kw = dict(kwargs)
        options = {k: kw.pop(k) for k in OPTION_KEYS if k in kw}
        label = ""
        if cfg is not None:
            kw.update(cfg.kwargs)
            options.update(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
            label = "x".join(str(v) for v in cfg.kwargs.values()) + f" w{cfg.num_warps} s{cfg.num_stages}"
        values = {}
        for i, p in enumerate(params):
            if i < len(args):
                values[p.name] = args[i]
            elif p.name in kw:
                values[p.name] = kw.pop(p.name)
            elif p.has_default:
                values[p.name] = p.default
            else:
                raise TypeError(f"{fn.__name__}: no value for {p.name}")
        if kw:
            raise TypeError(f"{fn.__name__}: unknown keyword arguments {sorted(kw)}")
        signature, constexprs, divisible = {}, {}, []
        for p in params:
            v = values[p.name]
            if p.is_constexpr:
                signature[p.name], constexprs[p.name] = "constexpr", v
                continue
            ty, div16 = _specialize(v, not getattr(p, "do_not_specialize", False),
                                    not getattr(p, "do_not_specialize_on_alignment", False))
            signature[p.name] = ty
            if ty == "constexpr":
                constexprs[p.name] = v
            elif div16:
                divisible.append(p.name)
        # The declared constexprs that tell launches apart (tile sizes are in `config`, INPUT_PRECISION in the
        # dtype label, the specialised unit strides in `signature`).
        consts_label = ",".join(f"{p.name}={values[p.name]}" for p in params if p.is_constexpr
                                and not p.name.startswith("BLOCK") and p.name not in ("GROUP_M", "INPUT_PRECISION"))
        jobs.append(dict(module=module, attr=name, kernel=fn.__name__, signature=signature, constexprs=constexprs,
                         divisible=divisible, options=options, config=label, constants=consts_label))
    return jobs


def collect_jobs(all_configs):
    """Every distinct compile job of the cases, for each dtype and target; a job several cases share
    (same specialisation) is compiled once and lists all of them."""
    jobs = {}
    for case, run in cases(all_configs):
        dtypes = DTYPES + (("fp32-ieee",) if all_configs and case == "conv3/cl" else ())
        for dtype in dtypes:
            log = []
            with recording(log):
                run(dtype)
            for launch in log:
                for job in jobs_of_launch(launch, all_configs):
                    for target in TARGETS:
                        key = json.dumps([job, dtype, target], sort_keys=True, default=str)
                        if key in jobs:
                            if case not in jobs[key]["cases"]:
                                jobs[key]["cases"].append(case)
                        else:
                            jobs[key] = dict(job, case=case, cases=[case], dtype=dtype, target=target)
    return list(jobs.values())


# --- compiling -------------------------------------------------------------------------------------------

_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_FTZ = re.compile(r"^\s*(?:@!?%\w+\s+)?([a-z][\w.]*\.ftz[\w.]*)\s", re.M)  # PTX opcodes that flush subnormals
_REGS = re.compile(r"Used (\d+) registers")


def _error_text(e):
    """The exception and its causes, innermost last (a CompilationError's own text only shows where the
    failing call is; the reason is in the cause chain)."""
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).strip()
        parts.append(f"{type(e).__name__}: {text[-1500:]}")
        e = e.__cause__ or e.__context__
    return "\n-- caused by --\n".join(parts)[-6000:]


def compile_job(job):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton import knobs

    from triton.runtime.autotuner import Autotuner

    obj = getattr(importlib.import_module(job["module"]), job["attr"])
    fn = obj.fn if isinstance(obj, Autotuner) else obj
    cc, smem_limit = TARGETS[job["target"]]
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in job["divisible"]}
    result = dict(job, ok=False)
    log = io.StringIO()
    start = time.perf_counter()
    knobs.nvidia.dump_ptxas_log = True  # printed by make_cubin: registers and spills
    try:
        with contextlib.redirect_stdout(log):
            k = triton.compile(ASTSource(fn=fn, signature=job["signature"], constexprs=job["constexprs"],
                                         attrs=attrs),
                               target=GPUTarget("cuda", cc, 32), options=dict(job["options"]))
    except Exception as e:  # noqa: BLE001 -- every failure is reported, not raised
        result.update(error=_error_text(e), seconds=round(time.perf_counter() - start, 2))
        return result
    ptx = k.asm["ptx"]
    text = log.getvalue()
    spill = _SPILL.search(text)
    regs = _REGS.search(text)
    result.update(ok=True, shared=int(k.metadata.shared), smem_limit=smem_limit,
                  mma="wgmma" if "wgmma.mma_async" in ptx else ("mma" if "mma.sync" in ptx else "-"),
                  regs=int(regs.group(1)) if regs else None,
                  spill_stores=int(spill.group(1)) if spill else None,
                  spill_loads=int(spill.group(2)) if spill else None,
                  ftz_ops=sorted(set(_FTZ.findall(ptx))),
                  num_warps=k.metadata.num_warps, num_stages=k.metadata.num_stages,
                  seconds=round(time.perf_counter() - start, 2))
    return result


def api_missing():
    """A reason this triton cannot compile ahead of time here, or None."""
    import inspect
    try:
        import triton
        import triton.backends.compiler as backend_compiler
        from triton.compiler import ASTSource
        from triton import knobs
    except ImportError as e:
        return f"triton lacks the AOT compile API ({e})"
    if not hasattr(backend_compiler, "GPUTarget"):
        return f"triton {triton.__version__} has no GPUTarget"
    if "attrs" not in inspect.signature(ASTSource.__init__).parameters:
        return f"triton {triton.__version__}: ASTSource takes no attrs"
    try:
        ptxas = knobs.nvidia.ptxas.path
    except Exception as e:  # noqa: BLE001
        return f"no ptxas ({e})"
    if not ptxas or not os.path.exists(ptxas):
        return "no ptxas"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--all", action="store_true", help="every autotune config, layer and layout")
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 8))
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("run with TRITON_INTERPRET unset")
    start = time.perf_counter()
    reason = api_missing()
    if reason:
        with open(args.out, "w") as f:
            json.dump({"skip": reason}, f)
        return
    jobs = collect_jobs(args.all)
    kernels = sorted({f"{j['module']}.{j['kernel']}" for j in jobs})
    # Expensive first (GEMMs, fused backward), so the pool's workers finish together.
    jobs.sort(key=lambda j: (j["module"].endswith("conv") and "BLOCK_K" in j["constexprs"],
                             "backward" in j["kernel"]), reverse=True)
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(compile_job, jobs))
    else:
        results = [compile_job(j) for j in jobs]
    all_kernels = sorted(launchable_kernels())
    with open(args.out, "w") as f:
        json.dump({"results": results, "kernels": kernels, "all_jit": all_kernels,
                   "triton": __import__("triton").__version__, "wall_s": round(time.perf_counter() - start, 1)},
                  f, default=str)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
