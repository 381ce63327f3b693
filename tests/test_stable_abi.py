"""The compiled extension is built on torch's stable C ABI and Python's limited API (issue 15).

- the library is an abi3 module that reports its ABI target (torch 2.11);
- it imports no symbol of ATen / c10 / torch's C++ API / libtorch_python / pybind11: every torch symbol it
  needs is a C function of torch's shim (aoti_torch_* / torch_*), and each of those is defined by the torch
  running the test (in CI: by torch 2.14.1 and by torch 2.11.0 -- the static half of the cross-version proof);
- a build's CPU kernels, loaded in a fresh process under the torch running the test, give torch's results.
  ALEXNET_KERNELS_FOREIGN_BUILD=<path to an _C.abi3.so> runs that check on another build's library: .ci/run
  passes its first leg's library (installed into the torch 2.14.1 virtualenv) to its torch 2.11.0 leg, so the
  same binary runs under both.
"""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from alexnet_kernels import _extension

TOOLS = [shutil.which(t) for t in ("nm", "readelf")]
needs_binutils = pytest.mark.skipif(None in TOOLS, reason="nm / readelf (binutils) are not installed")
needs_extension = pytest.mark.skipif(_extension.load() is None,
                                     reason="alexnet_kernels._C is not built: %s" % _extension.load_error())

# Namespaces of torch's C++ API and its Python bindings, as they appear in Itanium-mangled names.
FORBIDDEN_MANGLED = re.compile(r"N3c10|N2at|N5torch|3c10|2at[0-9A-Z]|5torch|8pybind11|N8pybind11")
TORCH_C_SHIM = re.compile(r"^(aoti_torch_|torch_)")


def library_path():
    return _extension.load().__file__


def undefined_symbols(path):
    out = subprocess.run(["nm", "-D", "--undefined-only", path], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()})


def needed_libraries(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def torch_defined_symbols():
    lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    names = set()
    for so in ("libtorch_cpu.so", "libtorch_cuda.so", "libtorch.so", "libc10.so"):
        path = os.path.join(lib, so)
        if os.path.exists(path):
            out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True,
                                 check=True).stdout
            names.update(line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip())
    return names


@needs_extension
def test_extension_is_an_abi3_module_with_its_abi_target():
    assert library_path().endswith(".abi3.so"), library_path()
    info = _extension.build_info()
    assert info["abi"] == "torch stable C ABI"
    assert info["abi_target"] == "2.11"
    assert info["python_abi"] == "abi3, Python >= 3.10"
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", info["git_commit"]), info["git_commit"]


@needs_extension
@needs_binutils
def test_library_links_only_torchs_stable_c_shim():
    path = library_path()
    needed = needed_libraries(path)
    assert not [n for n in needed if "torch_python" in n or "pybind" in n or n.startswith("libpython")], needed
    symbols = undefined_symbols(path)
    cxx_api = [s for s in symbols if s.startswith("_Z") and FORBIDDEN_MANGLED.search(s)]
    assert cxx_api == [], "C++ API symbols of torch / c10 / pybind11 imported: %s" % cxx_api[:20]
    python_bindings = [s for s in symbols if s.startswith(("THP", "pybind11"))]
    assert python_bindings == [], python_bindings
    shim = [s for s in symbols if TORCH_C_SHIM.match(s)]
    assert "aoti_torch_get_data_ptr" in shim and any(s.startswith("torch_library") for s in shim), shim
    # Every shim function the library calls exists in the torch running this test (2.11 in CI's second leg).
    missing = sorted(set(shim) - torch_defined_symbols())
    assert missing == [], "torch %s lacks the C shim functions %s" % (torch.__version__, missing)


CROSS_VERSION_SCRIPT = textwrap.dedent(r"""
    import sys
    import torch
    import torch.nn.functional as F
    import alexnet_kernels
    from alexnet_kernels import _extension, dropout, fused, lrn, pool

    kernels = _extension.load()
    assert kernels is not None, _extension.load_error()
    assert kernels.__file__.startswith(sys.argv[1]), (kernels.__file__, sys.argv[1])
    info = _extension.build_info()
    print("library built with torch %s, loaded under torch %s" % (info["torch_version"], torch.__version__))

    def close(a, b, tol=1e-5):
        err = (a.double() - b.double()).abs().max().item()
        assert err <= tol * max(1.0, b.double().abs().max().item()), err
        return err

    gen = torch.Generator().manual_seed(0)
    for channels_last in (False, True):
        x = torch.randn(3, 11, 9, 7, generator=gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for dtype in (torch.float32, torch.float64):
            xd = x.to(dtype).requires_grad_()
            y = lrn.local_response_norm(xd, 5, 1e-2, 0.75, 2.0, backend="cpu")
            ref = F.local_response_norm(xd, 5, 1e-2, 0.75, 2.0)
            close(y, ref)
            dy = torch.randn_like(y)
            close(torch.autograd.grad(y, xd, dy)[0], torch.autograd.grad(ref, xd, dy)[0])
            z = pool.max_pool2d(xd, 3, 2, backend="cpu")
            zr = F.max_pool2d(xd, 3, 2)
            assert torch.equal(z, zr)
            dz = torch.randn_like(z)
            assert torch.equal(torch.autograd.grad(z, xd, dz)[0], torch.autograd.grad(zr, xd, dz)[0])
            f = fused.relu_lrn_max_pool2d(xd, 5, 1e-2, 0.75, 2.0, 3, 2, backend="cpu")
            close(f, F.max_pool2d(F.local_response_norm(F.relu(xd), 5, 1e-2, 0.75, 2.0), 3, 2))
    h = torch.randn(37, 29, generator=gen)
    b = torch.randn(29, generator=gen)
    d_cpu = dropout.dropout(h, 0.3, generator=torch.Generator().manual_seed(5), backend="cpu")
    d_ref = dropout.dropout(h, 0.3, generator=torch.Generator().manual_seed(5), backend="torch")
    assert torch.equal(d_cpu, d_ref)
    f_cpu = dropout.bias_relu_dropout(h, b, 0.3, generator=torch.Generator().manual_seed(6), backend="cpu")
    f_ref = dropout.bias_relu_dropout(h, b, 0.3, generator=torch.Generator().manual_seed(6), backend="torch")
    assert torch.equal(f_cpu, f_ref)
    print("CPU kernels match torch")
""")


@needs_extension
def test_a_builds_cpu_kernels_match_torch_in_a_fresh_process(tmp_path):
    """The package copied to a fresh folder with the library under test (another build's, when
    ALEXNET_KERNELS_FOREIGN_BUILD names one), imported by a new interpreter of this virtualenv's torch."""
    library = os.environ.get("ALEXNET_KERNELS_FOREIGN_BUILD") or library_path()
    assert os.path.isfile(library), library
    package = os.path.dirname(os.path.abspath(_extension.__file__))
    copy = tmp_path / "alexnet_kernels"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy2(library, copy / "_C.abi3.so")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", CROSS_VERSION_SCRIPT, str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CPU kernels match torch" in proc.stdout
    print(proc.stdout)
