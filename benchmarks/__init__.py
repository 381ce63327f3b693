"""pytest-benchmark suite: ``pytest benchmarks --benchmark-only`` (see benchmarks/common.py).

A package so that its modules import as ``benchmarks.*`` and never clash with tests/ (both have a
test_lrn.py).  It is not installed: setup.py packages alexnet_kernels only.
"""
