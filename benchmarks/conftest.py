"""pytest configuration of the benchmark suite: the GPU fixture, the header and the final summary.

    pytest benchmarks --benchmark-only                   # everything this machine can run
    pytest benchmarks --benchmark-only -k "fp16 and fwd" # a subset (ids: mode-shape-dtype-layout-provider)
    BENCH_RESULTS_DIR=$OUT pytest benchmarks --benchmark-only

At the end of the run one table per op and device type is printed -- the only tables: pytest-benchmark's
own (every round's statistics, up to ~250 characters wide) are shown with --benchmark-tables, and are always
in its JSON (--benchmark-json PATH).  On a GPU the results are written to
benchmarks/results/<op>-<device>-<date>.md/.json/.png (see benchmarks/benchlib/; BENCH_WRITE_RESULTS=1 on a CPU).
"""
import pytest
import torch

import benchlib as common


def pytest_addoption(parser):
    parser.getgroup("benchmark").addoption(
        "--benchmark-tables", action="store_true", default=False,
        help="alexnet_kernels: also print pytest-benchmark's own tables (hidden by default: the suite prints "
             "its own summary)")


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or config.getoption("--benchmark-tables", default=False):
        return
    check_regressions = getattr(session, "check_regressions", None)

    def display(terminalreporter):   # pytest-benchmark's display() without its tables
        if check_regressions is not None:   # --benchmark-compare-fail still fails the run
            check_regressions()

    session.display = display


@pytest.fixture(scope="session")
def gpu():
    """The cuda device; skips when there is none.  Measures the copy bandwidth once per session."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False): the GPU cases need a GPU")
    common.gpu_copy_bandwidth_gbps()
    return torch.device("cuda")


def pytest_report_header(config):
    if torch.cuda.is_available():
        device = "%s (%d visible)" % (torch.cuda.get_device_name(0), torch.cuda.device_count())
    else:
        device = "none: GPU cases will be skipped"
    try:
        import triton
        triton_version = triton.__version__
    except Exception as exc:
        triton_version = "unavailable (%s)" % exc
    return ["benchmarks: torch %s (CUDA %s), triton %s, GPU %s"
            % (torch.__version__, torch.version.cuda, triton_version, device)]


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = common.summary_lines()
    if not lines:
        return
    terminalreporter.section("alexnet_kernels benchmark summary")
    for legend in common.SUMMARY_LEGEND:
        terminalreporter.write_line(legend)
    for line in lines:
        terminalreporter.write_line(line)
    try:
        paths = common.write_results()
    except Exception as exc:  # never lose the printed summary to a write error
        terminalreporter.write_line("could not write the results: %s: %s" % (type(exc).__name__, exc), red=True)
        return
    if paths:
        terminalreporter.write_line("")
        for path in paths:
            terminalreporter.write_line("results written to %s" % path)
    else:
        terminalreporter.write_line("")
        terminalreporter.write_line("results not written (written by default only when GPU rows were measured; "
                                    "BENCH_WRITE_RESULTS=1 forces it, to a CPU-named file on a CPU-only run, "
                                    "with the pictures)")
