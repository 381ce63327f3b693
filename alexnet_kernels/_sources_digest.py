"""A digest of the files the compiled extension is built from (csrc/, setup.py, pyproject.toml).

setup.py bakes it into the library (build_info()["sources_digest"]), so a prebuilt wheel can be matched with
a source tree without git: the one-call GPU check installs a wheel built on a CPU only when the digests agree
(benchmarks/tools/gpu_check.py).  This file imports nothing but the standard library: setup.py loads it by path.
"""
import hashlib
import os

BUILD_INPUTS = ("setup.py", "pyproject.toml")
SOURCE_DIR = "csrc"
SOURCE_SUFFIXES = (".h", ".cuh", ".cpp", ".cu")


def source_files(root):
    """The build inputs under the checkout `root`, as sorted relative paths."""
    files = [name for name in BUILD_INPUTS if os.path.isfile(os.path.join(root, name))]
    for folder, dirs, names in os.walk(os.path.join(root, SOURCE_DIR)):
        dirs.sort()
        for name in names:
            if name.endswith(SOURCE_SUFFIXES):
                files.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(files)


def sources_digest(root):
    """sha256 over the build inputs' relative paths and bytes (the first 16 hex digits)."""
    h = hashlib.sha256()
    for rel in source_files(root):
        h.update(rel.replace(os.sep, "/").encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()[:16]
