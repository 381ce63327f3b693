"""Digests of the files a build is made from, so a prebuilt wheel can be matched with a source tree without git.

- ``sources_digest``: the compiled extension's inputs (csrc/, setup.py, pyproject.toml).  setup.py bakes it into
  the library (build_info()["sources_digest"]); the tests use it to refuse a stale in-place library.
- ``package_digest``: everything the wheel installs -- those inputs plus every module of the Python packages
  (alexnet_kernels/, alexnet/).  setup.py writes it into the wheel as ``alexnet_kernels/_package_digest.json``
  (not into the source tree), and the one-call GPU check installs a wheel built on a CPU only when it equals the
  tree's (benchmarks/tools/gpu_check.py): a Python or Triton edit made after the wheel was built is caught.

This file imports nothing but the standard library: setup.py loads it by path.
"""
import hashlib
import json
import os

BUILD_INPUTS = ("setup.py", "pyproject.toml")
SOURCE_DIR = "csrc"
SOURCE_SUFFIXES = (".h", ".cuh", ".cpp", ".cu")
PACKAGE_DIRS = ("alexnet_kernels", "alexnet")
PACKAGE_SUFFIXES = (".py",)
MANIFEST = "_package_digest.json"


def _walk(root, folder, suffixes):
    found = []
    for where, dirs, names in os.walk(os.path.join(root, folder)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [os.path.relpath(os.path.join(where, n), root) for n in names if n.endswith(suffixes)]
    return found


def source_files(root):
    """The extension's build inputs under the checkout `root`, as sorted relative paths."""
    files = [name for name in BUILD_INPUTS if os.path.isfile(os.path.join(root, name))]
    return sorted(files + _walk(root, SOURCE_DIR, SOURCE_SUFFIXES))


def package_files(root):
    """Every file the wheel installs from `root` (the build inputs and the packages' modules), sorted."""
    files = source_files(root)
    for folder in PACKAGE_DIRS:
        files += _walk(root, folder, PACKAGE_SUFFIXES)
    return sorted(files)


def _digest(root, files):
    """sha256 over the files' relative paths and bytes (the first 16 hex digits)."""
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.replace(os.sep, "/").encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()[:16]


def sources_digest(root):
    return _digest(root, source_files(root))


def package_digest(root):
    return _digest(root, package_files(root))


def manifest(root):
    """What setup.py writes into the wheel: both digests and the file count."""
    return {"package_digest": package_digest(root), "sources_digest": sources_digest(root),
            "files": len(package_files(root))}


def installed_manifest():
    """The manifest of the installed package (a wheel or `pip install .`), or None for a source checkout."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
