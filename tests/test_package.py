"""Package-level behaviour: import without the extension, `python -m alexnet_kernels`, build metadata."""
import os
import subprocess
import sys
import textwrap

import torch

import alexnet_kernels
from common import child_pythonpath  # tests/common.py

# Children import the same alexnet_kernels as this process (installed, or the source tree in a dev run).
ENV = dict(os.environ, PYTHONWARNINGS="default", PYTHONPATH=child_pythonpath())


def run_python(code, tmp_path):
    # cwd elsewhere: `python -c` and `-m` put the cwd first on sys.path, which in a checkout would import
    # the source tree (without the built extension) instead of the installed package.
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=ENV, timeout=300, cwd=tmp_path)


# Makes `import alexnet_kernels._C` fail as a broken build would (pasted into the child processes' code).
BLOCK_EXTENSION = """class BlockC:
            def find_spec(self, name, path=None, target=None):
                if name == "alexnet_kernels._C":
                    raise ImportError("simulated: no compiled extension")
        sys.meta_path.insert(0, BlockC())"""


def test_imports_and_falls_back_without_the_extension(tmp_path):
    """If _C cannot load, the package imports, warns once with the reason, and 'torch' still works."""
    out = run_python("""
        import sys, warnings
        BLOCK_EXTENSION
        import torch
        import alexnet_kernels.lrn as lrn
        from alexnet_kernels import BackendUnavailableError
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = torch.randn(2, 5, 3, 3)
            y1 = lrn.local_response_norm(x, 3)              # auto -> torch composite
            y2 = lrn.local_response_norm(x, 3)
        assert torch.allclose(y1, torch.nn.functional.local_response_norm(x, 3))
        msgs = [str(w.message) for w in caught if "alexnet_kernels._C" in str(w.message)]
        assert len(msgs) == 1 and "simulated" in msgs[0], msgs
        try:
            lrn.local_response_norm(x, 3, backend="cpu")
        except BackendUnavailableError as e:
            assert "unavailable" in str(e) and "simulated" in str(e), e
        else:
            raise AssertionError("backend='cpu' should have raised")
        print("OK")
    """.replace("BLOCK_EXTENSION", BLOCK_EXTENSION), tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("OK")


def test_missing_extension_advice_fits_where_the_package_was_imported_from(tmp_path):
    """Imported from a source checkout (the current folder shadows the installed package) the warning says to
    run from another folder or build in place -- reinstalling would not help; imported from an installed copy
    it says to reinstall."""
    package_dir = os.path.dirname(os.path.abspath(alexnet_kernels.__file__))
    code = textwrap.dedent("""
        import sys, warnings
        BLOCK_EXTENSION
        import alexnet_kernels
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            alexnet_kernels.build_info()
        print("\\n".join(str(w.message) for w in caught if "alexnet_kernels._C" in str(w.message)))
    """.replace("BLOCK_EXTENSION", BLOCK_EXTENSION))
    messages = {}
    for kind in ("checkout", "installed"):
        folder = tmp_path / kind
        folder.mkdir()
        os.symlink(package_dir, folder / "alexnet_kernels")   # abspath keeps the link: __file__ is under folder
        if kind == "checkout":
            (folder / "setup.py").write_text("# a checkout's setup.py\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300,
                             cwd=folder)   # -c puts the cwd first on sys.path, as in a checkout
        assert out.returncode == 0, out.stderr
        messages[kind] = out.stdout.strip()
        assert "simulated" in messages[kind], messages[kind]
    assert str(tmp_path / "checkout") in messages["checkout"], messages["checkout"]
    assert "run from another folder" in messages["checkout"] and "-e ." in messages["checkout"]
    assert "reinstall" not in messages["checkout"].lower(), messages["checkout"]
    assert "reinstall with `pip install .`" in messages["installed"]
    assert "another folder" not in messages["installed"]


def test_info_command_prints_every_backend(tmp_path):
    out = subprocess.run([sys.executable, "-m", "alexnet_kernels"], capture_output=True, text=True,
                         env=ENV, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in ("torch " + torch.__version__, "triton", "cpu", "cuda", "torch", "cuDNN LRN baseline",
                 "conv2d_relu: backend 'cuda' is the CUDA C++ implicit GEMM"):
        assert word in out.stdout
    assert "default backend" in out.stdout
    conv_line = next(line for line in out.stdout.splitlines() if "conv2d_relu:" in line)
    assert "'cpu' runs torch's CPU convolution" in conv_line and "not supported" not in conv_line, conv_line
    cudnn_line = next(line for line in out.stdout.splitlines() if "cuDNN LRN baseline" in line)
    if not torch.cuda.is_available():   # built with cuDNN or not, nothing can run it without a GPU
        assert "unavailable" in cudnn_line and not cudnn_line.rstrip().endswith(": ok"), cudnn_line
    from alexnet_kernels import _extension
    if _extension.build_info() is not None:  # the stable-ABI library names its target and the running torch
        assert "ABI target torch 2.11" in out.stdout and "loaded under torch " + torch.__version__ in out.stdout


def test_build_info_records_the_build():
    info = alexnet_kernels.build_info()
    if info is None:
        import pytest
        pytest.skip("alexnet_kernels._C is not built in this environment")
    for key in ("torch_version", "cuda_version", "cuda_archs", "with_cuda", "with_cudnn"):
        assert key in info
    assert isinstance(info["with_cuda"], bool)


def test_backend_environment_variable(tmp_path):
    """$ALEXNET_KERNELS_BACKEND sets the default; empty counts as unset; a wrong name is named at import."""
    code = "import alexnet_kernels; print(alexnet_kernels.default_backend())"
    for value, expected in (("torch", "torch"), ("", "auto"), ("cpu", "cpu")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path, env=dict(ENV, ALEXNET_KERNELS_BACKEND=value))
        assert out.returncode == 0 and out.stdout.strip() == expected, (value, out.stdout, out.stderr[-2000:])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env=dict(ENV, ALEXNET_KERNELS_BACKEND="tritn"))
    assert out.returncode != 0
    assert "$ALEXNET_KERNELS_BACKEND must be one of" in out.stderr and "'tritn'" in out.stderr
