"""Build alexnet_kernels and its compiled extension ``alexnet_kernels._C``.

The CPU sources are always compiled.  The CUDA sources (and the cuDNN baseline wrapper) are compiled
whenever a CUDA toolkit and a CUDA build of torch are present -- no GPU is needed to compile.

Environment knobs:
  TORCH_CUDA_ARCH_LIST        architectures to build (default "8.0;9.0")
  CUDA_HOME                   toolkit root (default: found from the ``nvcc`` on PATH)
  ALEXNET_KERNELS_NO_CUDA=1   build the CPU sources only
  ALEXNET_KERNELS_NO_CUDNN=1  skip the cuDNN baseline wrapper

The extension uses only torch's stable C ABI (torch/csrc/stable, targeting torch 2.11) and Python's limited
API: one build loads under every torch >= 2.11 and every CPython >= 3.10 (an abi3 wheel), so an isolated
`pip install .` -- which compiles against whatever torch pip puts in the build environment -- cannot mismatch
the torch it then runs with.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _toolkit_ok(root):
    return bool(root) and os.path.isfile(os.path.join(root, "bin", "nvcc")) and os.path.isfile(
        os.path.join(root, "include", "cuda_runtime.h"))


def find_cuda_home():
    """Locate the CUDA toolkit root.  ``nvcc`` on PATH may be a wrapper script that execs the real
    compiler elsewhere, so ask nvcc itself (its dry run prints ``TOP=<toolkit>/bin/..``)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _toolkit_ok(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            probe = os.path.join(tmp, "probe.cu")
            with open(probe, "w") as f:
                f.write("__global__ void probe() {}\n")
            out = subprocess.run([nvcc, "-dryrun", "-c", probe, "-o", os.path.join(tmp, "probe.o")],
                                 capture_output=True, text=True, timeout=60)
        text = out.stdout + out.stderr
        m = re.search(r"^#\$ TOP=(.+)$", text, re.M)
        if m:
            root = os.path.realpath(m.group(1).strip())
            if _toolkit_ok(root):
                return root
    except (OSError, subprocess.SubprocessError):
        pass
    root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return root if _toolkit_ok(root) else None


def find_cudnn():
    """(include_dir, library_dir) of cuDNN: the nvidia-cudnn wheel torch depends on, or the toolkit."""
    candidates = []
    if os.environ.get("CUDNN_HOME"):
        candidates.append(os.environ["CUDNN_HOME"])
    try:
        import nvidia.cudnn as _cudnn  # namespace package of the nvidia-cudnn-cu* wheel
        candidates.extend(list(getattr(_cudnn, "__path__", [])))
    except ImportError:
        pass
    if CUDA_HOME:
        candidates.append(CUDA_HOME)
    for root in candidates:
        inc = os.path.join(root, "include")
        if not os.path.isfile(os.path.join(inc, "cudnn.h")):
            continue
        for libdir in (os.path.join(root, "lib"), os.path.join(root, "lib64")):
            if os.path.isdir(libdir) and any(f.startswith("libcudnn.so") for f in os.listdir(libdir)):
                return inc, libdir
    return None


CUDA_HOME = None if os.environ.get("ALEXNET_KERNELS_NO_CUDA") == "1" else find_cuda_home()
if CUDA_HOME:
    # torch.utils.cpp_extension reads CUDA_HOME when imported: set it first.
    os.environ["CUDA_HOME"] = CUDA_HOME
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

import torch  # noqa: E402  (needs the environment above)
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

WITH_CUDA = CUDA_HOME is not None and torch.version.cuda is not None
CUDNN = find_cudnn() if WITH_CUDA and os.environ.get("ALEXNET_KERNELS_NO_CUDNN") != "1" else None
WITH_CUDNN = CUDNN is not None


def _digests():
    """alexnet_kernels/_sources_digest.py, loaded by path (importing the package would import torch first)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "_ak_sources_digest", os.path.join(HERE, "alexnet_kernels", "_sources_digest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sources_digest():
    return _digests().sources_digest(HERE)


class BuildPyWithManifest(build_py):
    """build_py that also writes alexnet_kernels/_package_digest.json into the build (never into the source
    tree): the digest of every file the wheel installs, which the one-call GPU check compares with its tree."""

    def run(self):
        super().run()
        digests = _digests()
        target = os.path.join(self.build_lib, "alexnet_kernels", digests.MANIFEST)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            json.dump(dict(digests.manifest(HERE), git_commit=git_commit()), f)


def git_commit():
    """The checkout's commit (with "+dirty" for uncommitted changes to tracked files), or "unknown"."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                             timeout=30).stdout.strip()
        if not re.fullmatch(r"[0-9a-f]{40}", sha):
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _src(*names):
    return [os.path.join("csrc", n) for n in names]


def _str_macro(name, value):
    return (name, '"%s"' % str(value).replace('"', ''))


# The oldest torch whose stable ABI the extension may use (0xMMmm << 48), and the oldest CPython.
TORCH_TARGET = (2, 11)
PY_LIMITED_API_MIN = (3, 10)


def make_extension():
    macros = [
        ("TORCH_TARGET_VERSION", "0x%02x%02x000000000000ULL" % TORCH_TARGET),
        ("AK_PY_LIMITED_API_MIN", "%d.%d" % PY_LIMITED_API_MIN),
        _str_macro("AK_BUILD_TORCH_VERSION", torch.__version__),
        _str_macro("AK_BUILD_CUDA_VERSION", torch.version.cuda if WITH_CUDA else "none"),
        _str_macro("AK_BUILD_CUDA_ARCHS", os.environ["TORCH_CUDA_ARCH_LIST"] if WITH_CUDA else "none"),
        _str_macro("AK_BUILD_CUDA_HOME", CUDA_HOME or "none"),
        _str_macro("AK_BUILD_GIT_COMMIT", git_commit()),
        _str_macro("AK_BUILD_SOURCES_DIGEST", sources_digest()),
    ]
    # No -std flag: torch.utils.cpp_extension adds the standard its headers need (C++20 for torch >= 2.10).
    # No -fopenmp: the CPU kernels' parallel loops call torch's own thread pool through the stable ABI
    # (torch_parallel_for), so the extension needs no OpenMP runtime of its own.
    # -fno-math-errno: sqrtf (LRN's beta = 0.75 power) vectorises only when it need not set errno (GCC ignores
    # it in `#pragma GCC optimize`); no kernel reads errno.
    cxx_flags = ["-O3", "-fno-math-errno"]
    # py_limited_api: torch.utils.cpp_extension then defines Py_LIMITED_API and leaves out libtorch_python.
    limited = dict(py_limited_api=True)
    sources = _src("bindings.cpp", "lrn_cpu.cpp", "pool_cpu.cpp", "dropout_cpu.cpp")
    if not WITH_CUDA:
        return CppExtension("alexnet_kernels._C", sources, define_macros=macros,
                            extra_compile_args={"cxx": cxx_flags}, **limited)
    macros.append(("AK_WITH_CUDA", "1"))
    sources += _src("lrn_cuda.cu", "pool_cuda.cu", "dropout_cuda.cu", "conv_cuda.cu")
    include_dirs, library_dirs, libraries, link_args = [], [], [], []
    # The toolkit keeps its libraries in lib/ on some installs and lib64/ on others.
    for sub in ("lib", "lib64"):
        d = os.path.join(CUDA_HOME, sub)
        if os.path.isdir(d) and d not in library_dirs:
            library_dirs.append(d)
    if WITH_CUDNN:
        inc, libdir = CUDNN
        macros.append(("AK_WITH_CUDNN", "1"))
        sources += _src("cudnn_lrn.cpp")
        include_dirs.append(inc)
        library_dirs.append(libdir)
        so = sorted(f for f in os.listdir(libdir) if re.fullmatch(r"libcudnn\.so(\.\d+)?", f))[-1]
        # The wheel ships only the versioned soname (libcudnn.so.9): link it by file name. At run time torch has
        # loaded that soname already; the rpaths are for loading _C alone: the nvidia-cudnn wheel next to the
        # installed package (site-packages/nvidia/cudnn/lib, also right after an isolated build, whose build
        # environment is gone by then), then the directory found at build time.
        link_args += ["-l:" + so, "-Wl,-rpath,$ORIGIN/../nvidia/cudnn/lib", "-Wl,-rpath," + libdir]
    # --use_fast_math for its fast exp2/log2/division (LRN's powers), but -ftz=false: fast math alone also
    # flushes subnormals to zero (-ftz=true) in every float op, comparisons included, so max-pool would take
    # the first of several subnormals (compared as zeros) instead of torch's maximum and its backward sum
    # would drop subnormal gradients -- no longer bit-exact.  nvcc lets a later -ftz=false override the
    # implied -ftz=true (the .ftz-free instructions are checked in the built binary by
    # tests/test_subnormals.py).  torch's extension builder has no per-file flags, so this holds for every
    # .cu file: LRN and dropout keep subnormals too (on sm_80+ that costs fp32 add/mul/fma nothing).
    nvcc_flags = ["-O3", "--use_fast_math", "-ftz=false", "-lineinfo"]
    return CUDAExtension("alexnet_kernels._C", sources, define_macros=macros, include_dirs=include_dirs,
                         library_dirs=library_dirs, libraries=libraries, extra_link_args=link_args,
                         extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags}, **limited)


print("alexnet_kernels build: torch %s, CUDA sources %s (toolkit %s, archs %s), cuDNN baseline %s" % (
    torch.__version__, "on" if WITH_CUDA else "off", CUDA_HOME, os.environ["TORCH_CUDA_ARCH_LIST"],
    "on" if WITH_CUDNN else "off"), file=sys.stderr)

setup(
    name="alexnet-kernels",
    version="0.1.0",
    description="Hand-optimised GPU kernels for AlexNet's building blocks (LRN, conv+ReLU, max-pool, dropout)",
    packages=find_packages(include=["alexnet_kernels", "alexnet_kernels.*", "alexnet", "alexnet.*"]),
    python_requires=">=3.10",
    install_requires=["torch", "numpy"],
    extras_require={"triton": ["triton"], "test": ["pytest", "pytest-benchmark", "expecttest"],
                    "train": ["torchvision", "scikit-learn", "tqdm", "matplotlib"],
                    # the benchmark suite and its CPU peers (benchmarks/benchlib/peers.py): pip install ".[bench]"
                    "bench": ["pytest", "pytest-benchmark", "matplotlib", "onnx", "onnxscript", "onnxruntime",
                              "openvino"]},
    ext_modules=[make_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True), "build_py": BuildPyWithManifest},
    zip_safe=False,
    # One wheel for every CPython >= 3.10 (cp310-abi3).
    options={"bdist_wheel": {"py_limited_api": "cp%d%d" % PY_LIMITED_API_MIN}},
)
