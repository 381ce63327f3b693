"""The one-call GPU check: every answer that matters from one device command, in a fixed time.

    bash benchmarks/tools/gpu_check.sh              # on the GPU machine (ends within ~530 s)
    bash benchmarks/tools/gpu_check.sh --dry-run    # on a CPU: every phase's code at tiny shapes (a test runs it)

Phases, in order, each with its own time budget (seconds; the argument for each is in
benchmarks/results/README.md).  One failing case never stops the others.

  build        the wheel built on a CPU beforehand (`gpu_check.py wheel`: .whl/, carried to the GPU machine
               with the source) installed with pip in seconds, if the digest of everything it installs (the
               extension's sources and the Python packages: alexnet_kernels/_sources_digest.py) equals the
               tree's; else `pip install --no-build-isolation --no-deps .` for sm_90 with every core -- the
               command CI's torch 2.11.0 leg runs too (`gpu_check.py build-fallback`)       (budget 120 s)
  correctness  every op x backend x dtype x layout, forward and backward, at the AlexNet shapes (batch 128)
               and odd shapes, against a float64 reference; CUDA-graph capture + replay; the AlexNet,
               kernels="ours" against kernels="torch".  One worker process per op, side by side; a worker
               that crashes (an illegal address poisons the CUDA context) is restarted after the case that
               crashed it.  Kernels that never ran on a GPU come first in every list (the CUDA C++ conv, the
               Triton LRN backward, the chunked dropout backward), re-checks of what ran before last, so a
               budget cut loses re-checks                                                     (budget 120 s)
  memcheck     compute-sanitizer: a planted out-of-bounds write first proves the sanitizer reports on this
               machine; --tool memcheck over every CUDA and Triton kernel at small odd shapes, --tool racecheck
               over the CUDA kernels with shared memory (the CUDA C++ conv forward, dgrad and wgrad with each
               loader and tile among them).  CUDA API errors of torch/Triton/cuDNN are not reported
               (--report-api-errors no); a machine whose sanitizer refuses the device (gVisor) is one REFUSED
               line within seconds                                                            (budget 90 s)
  headline     the benchmark cases that decide the performance bars, every provider in one process
               (the bench_<op>.py GPU test functions themselves)                              (budget 210 s)
  tests        if time is left: pytest tests on the GPU with a per-test timeout, then the LRN tile sweep

The return path (the device tool brings back at most 8 plain files from $OUT, each <= 16 MiB, no deeper than
$OUT/a/b/file, names of letters, digits, '.', '_', '-'; then only the last 12,000 characters of the output):
the phases work in a folder outside $OUT, and at every phase end $OUT is rewritten to hold exactly
gpu_check.md, gpu_check.json, gpu_check-tail.txt (the summary below) and gpu_check-files.tar.gz (everything
else: logs, per-case rows, the headline's results files; large logs cut to their tails if it would pass
ARCHIVE_LIMIT_BYTES).  After every phase, and last of all, the command prints a compact summary -- one line per
phase (status, seconds, counts), then the first failures with their errors -- so the output's tail alone says
what happened if no file comes back.  A phase in which no case ran is never PASS (EMPTY).

Autotuning is kept out (ALEXNET_KERNELS_AUTOTUNE=0).  Subcommands: `run` (the check), `wheel` (on a CPU,
before the device call), `build-fallback` (the build phase's compile, as CI runs it), `verify --out DIR` (the
return-path rules on a folder); `worker ...` is internal.
"""
import argparse
import datetime
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "benchmarks"
TESTS_DIR = REPO / "tests"
ME = Path(__file__).resolve()

TOTAL_S = 530           # the whole call (a device command may run 600 s: room for the transfers)
WHEEL_DIR = REPO / ".whl"        # gitignored; carried to the GPU machine by the device tool
WHEEL_ARCHS = "9.0"
WHEEL_LIMIT_BYTES = 64 * 2**20    # what the device tool carries, in all
BUDGETS = {"build": 120, "correctness": 120, "memcheck": 90, "headline": 210}
PHASES = ("build", "correctness", "memcheck", "headline", "tests")
DRY_RUN_BUDGET_SCALE = 3
SUMMARY_RESERVE_S = 10  # kept back at the end for the last gpu_check.md / .json
TEST_TIMEOUT_S = 60     # per test in the tests phase (tests/conftest.py: ALEXNET_KERNELS_TEST_TIMEOUT)
# One worker process per entry; conv is split by dtype because its Triton kernels are the slowest to compile.
CORRECTNESS_OPS = ("conv-bf16", "conv-fp16", "conv-fp32", "conv-fp32-tf32", "lrn", "pool", "fused", "dropout",
                   "alexnet")

# --- the device tool's return path (../.library/device/README.md, Limits) ---
OUT_MAX_FILES = 8
OUT_MAX_FILE_BYTES = 16 * 2**20
OUT_MAX_DEPTH = 3                      # $OUT/a/b/file: at most two folders deep
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
OUTPUT_TAIL_CHARS = 12000              # what comes back of the command's output
SUMMARY_MAX_CHARS = 9000               # the last summary block fits the tail with room to spare
ARCHIVE = "gpu_check-files.tar.gz"
ARCHIVE_LIMIT_BYTES = 15 * 2**20
TAIL_FILE = "gpu_check-tail.txt"
OUT_FILES = ("gpu_check.md", "gpu_check.json", TAIL_FILE, ARCHIVE)
SUMMARY_BEGIN = "==== gpu_check summary"
SUMMARY_END = "==== end of gpu_check summary ===="


def now():
    return time.monotonic()


def log(msg):
    print("[gpu_check %s] %s" % (datetime.datetime.now().strftime("%H:%M:%S"), msg), flush=True)


def first_line(text, limit=300):
    text = (str(text).strip().splitlines() or [""])[0]
    return text if len(text) <= limit else text[:limit] + "..."


def write_json(path, data):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


# ==================================================================================================
# Orchestrator
# ==================================================================================================

class Check:
    """The state of one gpu_check call: phases, their status and files, the deadline.  `work` holds every file
    the phases write; `out` ($OUT) receives only OUT_FILES (publish())."""

    def __init__(self, out, dry_run, total_s, work=None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(work) if work else Path(tempfile.mkdtemp(prefix="gpu_check_work."))
        self.work.mkdir(parents=True, exist_ok=True)
        self.dry_run = dry_run
        # A dry run interprets the Triton kernels on the CPU: the same phases, at 3x the budgets (a shared 2-core
        # machine must still finish every case: the dry run proves the cases' code, not the timing).
        self.budgets = {k: v * (DRY_RUN_BUDGET_SCALE if dry_run else 1) for k, v in BUDGETS.items()}
        total_s = total_s if total_s is not None else TOTAL_S * (DRY_RUN_BUDGET_SCALE if dry_run else 1)
        self.total_s = total_s
        self.start = now()
        self.deadline = self.start + total_s
        self.started_at = datetime.datetime.now()
        self.phases = {}   # name -> {"status", "seconds", "summary", "files", ...}
        self.env = dict(os.environ)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["ALEXNET_KERNELS_AUTOTUNE"] = "0"   # no autotuning in the first four phases
        if dry_run:
            self.env["TRITON_INTERPRET"] = "1"
        self.environment = None
        self.tree = None      # which tree is tested: commit, digest, file count (tree_identity())

    def left(self):
        return self.deadline - now()

    def phase_limit(self, name, later=()):
        """Seconds this phase may run: until its planned end (the call's start + the budgets up to and
        including it; time an earlier phase left unused carries over), at least half its budget when earlier
        phases overran, and never so long that the later phases lose more than half of theirs."""
        budgets = self.budgets
        names = list(budgets)
        planned_end = self.start + sum(budgets[p] for p in names[:names.index(name) + 1])
        limit = max(0.5 * budgets[name], planned_end - now())
        reserve = sum(0.5 * budgets[p] for p in later) + SUMMARY_RESERVE_S
        return max(5.0, min(limit, self.left() - reserve))

    def run_phase(self, name, fn):
        t0 = now()
        log("phase %s: start (%.0f s left in the call)" % (name, self.left()))
        try:
            result = fn() or {}
        except Exception as exc:  # a phase's own bug must not stop the later phases
            result = {"status": "ERROR", "summary": "%s: %s" % (type(exc).__name__, first_line(exc)),
                      "traceback": traceback.format_exc(),
                      "failures": ["%s: %s" % (type(exc).__name__, first_line(exc, 500))]}
        result.setdefault("status", "DONE")
        result["seconds"] = round(now() - t0, 1)
        self.phases[name] = result
        log("phase %s: %s in %.1f s -- %s" % (name, result["status"], result["seconds"], result.get("summary", "")))
        self.publish(print_summary=True)
        return result

    def skip_phase(self, name, reason):
        self.phases[name] = {"status": "SKIPPED", "seconds": 0.0, "summary": reason}
        log("phase %s: skipped -- %s" % (name, reason))
        self.publish()

    def python(self, *args):
        # -P: the checkout is not put on sys.path, so the installed package (with its extension) is imported.
        return [sys.executable, "-P", str(ME)] + list(args)

    def publish(self, print_summary=False):
        """Rewrite $OUT: gpu_check.md/.json, the summary and the archive of the work folder."""
        publish(self, print_summary)


# --------------------------------------------------------------------------------------------------
# The return path: $OUT holds OUT_FILES only; the output's tail holds the summary

def pack_archive(work, target, limit=ARCHIVE_LIMIT_BYTES):
    """Write every file under `work` into the gzipped tar `target` (written beside it, then renamed: a call
    killed meanwhile leaves the previous archive whole).  If the archive would pass `limit`, the largest files
    are cut to their last part (a line in the archive's TRUNCATED.txt says which) until it fits.
    Returns (bytes, the names of the cut files)."""
    files = sorted(p for p in Path(work).rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
    keep = {}   # path -> bytes kept from its end (None: whole)
    cut = []
    while True:
        tmp = Path(str(target) + ".tmp")
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            for p in files:
                rel = p.relative_to(work).as_posix()
                try:
                    data = p.read_bytes()
                except OSError:
                    continue   # a file a worker is rewriting right now: the next publish takes it
                if keep.get(p) is not None and len(data) > keep[p]:
                    data = b"[... cut to its last %d bytes to keep the archive under %d MiB ...]\n" % (
                        keep[p], limit // 2**20) + data[-keep[p]:]
                info = tarfile.TarInfo(rel)
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
            if cut:
                note = ("\n".join("%s: cut to its last %d bytes" % (p.relative_to(work).as_posix(), keep[p])
                                  for p in cut) + "\n").encode()
                info = tarfile.TarInfo("TRUNCATED.txt")
                info.size, info.mtime = len(note), int(time.time())
                tar.addfile(info, io.BytesIO(note))
        size = tmp.stat().st_size
        candidates = [p for p in files if p.exists() and p.stat().st_size > 2**20 and keep.get(p, 1 << 62) > 2**18]
        if size <= limit or not candidates:
            tmp.replace(target)
            return size, [p.relative_to(work).as_posix() for p in cut]
        biggest = max(candidates, key=lambda p: min(p.stat().st_size, keep.get(p, 1 << 62)))
        keep[biggest] = max(2**18, min(biggest.stat().st_size, keep.get(biggest, 1 << 62)) // 4)
        if biggest not in cut:
            cut.append(biggest)


def verify_out(out):
    """What breaks the device tool's return rules in `out` (a list of problems; empty: it all comes back)."""
    out = Path(out)
    problems, files = [], []
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            problems.append("%s: not a plain file or folder" % rel)
            continue
        if any(not OUT_NAME.match(part) for part in rel.parts):
            problems.append("%s: a name with characters other than letters, digits, '.', '_', '-'" % rel)
        if p.is_dir():
            continue
        files.append(rel)
        if len(rel.parts) > OUT_MAX_DEPTH:
            problems.append("%s: deeper than $OUT/a/b/file" % rel)
        if p.stat().st_size > OUT_MAX_FILE_BYTES:
            problems.append("%s: %d bytes, over the %d MiB a file may have" % (rel, p.stat().st_size,
                                                                               OUT_MAX_FILE_BYTES // 2**20))
    if len(files) > OUT_MAX_FILES:
        problems.append("%d files, over the %d that come back: %s" % (len(files), OUT_MAX_FILES,
                                                                      ", ".join(map(str, files[:20]))))
    return problems


def phase_line(name, phase):
    """One line of the summary's phase table: name, status, seconds, counts."""
    if phase is None:
        return "%-12s %-11s %7s  %s" % (name, "NOT_REACHED", "-", "")
    summary = re.sub(r"\s+", " ", str(phase.get("summary", "")))
    return "%-12s %-11s %7.1f  %s" % (name, phase["status"], float(phase.get("seconds") or 0.0), summary[:400])


def summary_text(check, final=False):
    """The compact summary printed after every phase and last of all (<= SUMMARY_MAX_CHARS): the environment,
    the tree, one line per phase, then the first failures with their errors."""
    env = check.environment or {}
    tree = check.tree or {}
    head = ["%s%s%s -- %.0f s of %.0f ====" % (
        SUMMARY_BEGIN, " (final)" if final else "",
        ": DRY RUN on a CPU, tiny shapes, not a measurement" if check.dry_run else "",
        now() - check.start, check.total_s),
        "env: %s (%s, %s SMs), driver %s; python %s, torch %s (CUDA %s, cuDNN %s), triton %s" % (
            env.get("device"), env.get("compute_capability"), env.get("sm_count"), env.get("driver"),
            env.get("python"), env.get("torch"), env.get("cuda"), env.get("cudnn"), env.get("triton")),
        "tree: commit %s; package digest %s over %s files; tested: %s" % (
            tree.get("commit", env.get("commit")), tree.get("package_digest"), tree.get("files"),
            tree.get("installed", "not checked yet")),
        "%-12s %-11s %7s  %s" % ("phase", "status", "seconds", "counts / summary")]
    head += [phase_line(name, check.phases.get(name)) for name in PHASES]
    tail = []
    if final:
        problems = verify_out(check.out)
        tail.append("files in $OUT (%s): %s" % (", ".join(sorted(p.name for p in check.out.iterdir())),
                                                "all within the device's return rules" if not problems
                                                else "; ".join(problems)))
    tail.append(SUMMARY_END)
    budget = SUMMARY_MAX_CHARS - sum(len(x) + 1 for x in head + tail) - 200
    fails = []
    for name in PHASES:
        for f in (check.phases.get(name) or {}).get("failures") or []:
            line = "  %s: %s" % (name, re.sub(r"\s+", " ", str(f))[:600])
            if budget - len(line) - 1 < 0:
                fails.append("  ... more in gpu_check.md and the archive")
                budget = -1
                break
            fails.append(line)
            budget -= len(line) + 1
        if budget < 0:
            break
    if fails:
        head.append("first failures:")
    return "\n".join(head + fails + tail)


def publish(check, print_summary=False, final=False):
    write_summary(check)    # gpu_check.md / .json in the work folder
    size, cut = pack_archive(check.work, check.out / ARCHIVE)
    check.archive = {"bytes": size, "cut": cut}
    for name in ("gpu_check.md", "gpu_check.json"):
        tmp = check.out / (name + ".tmp")
        shutil.copyfile(check.work / name, tmp)
        tmp.replace(check.out / name)
    text = summary_text(check, final=final)
    tmp = check.out / (TAIL_FILE + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(check.out / TAIL_FILE)
    if print_summary or final:
        print(text, flush=True)


# --------------------------------------------------------------------------------------------------
# environment and tree

def git_commit():
    if os.environ.get("GPU_CHECK_COMMIT"):
        return os.environ["GPU_CHECK_COMMIT"]
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown (no git checkout here: pass GPU_CHECK_COMMIT=<sha>)"


def probe_environment(check):
    """Versions, device and driver, read in a subprocess (the orchestrator never initialises CUDA)."""
    # benchlib/versions.py's text (the standard library and torch only), then its probe() as one line
    code = (REPO / "benchmarks" / "benchlib" / "versions.py").read_text() + (
        "\nimport json\ninfo = probe()\ninfo['device'] = info['device'] or 'cpu (no CUDA device)'\n"
        "print('@@ENV ' + json.dumps(info, default=str))\n")
    env = {"commit": git_commit(), "date": check.started_at.date().isoformat(),
           "started": check.started_at.isoformat(timespec="seconds"), "host_python": platform.python_version(),
           "cpu_count": os.cpu_count(), "dry_run": check.dry_run}
    try:
        out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120,
                             env=check.env, cwd=str(check.work))
        for line in out.stdout.splitlines():
            if line.startswith("@@ENV "):
                env.update(json.loads(line[6:]))
        if "torch" not in env:
            env["probe_error"] = first_line(out.stderr[-2000:] or out.stdout[-2000:])
    except (OSError, subprocess.SubprocessError) as exc:
        env["probe_error"] = "%s: %s" % (type(exc).__name__, exc)
    return env


def digests():
    """alexnet_kernels/_sources_digest.py of the tree, loaded by path (no torch, no installed package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_ak_sources_digest",
                                                  REPO / "alexnet_kernels" / "_sources_digest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sources_digest():
    """The tree's extension-sources digest, as setup.py bakes it into the library."""
    return digests().sources_digest(str(REPO))


def tree_identity():
    """Which tree this call tests: commit, the digest of every file the wheel installs, their count."""
    d = digests()
    return {"commit": git_commit(), "package_digest": d.package_digest(str(REPO)),
            "sources_digest": d.sources_digest(str(REPO)), "files": len(d.package_files(str(REPO)))}


# --------------------------------------------------------------------------------------------------
# build

def installed_build_info(check):
    """build_info() and the package manifest of the installed package, imported from outside the checkout."""
    code = ("import json, alexnet_kernels; from alexnet_kernels import _sources_digest as d; "
            "print('@@INFO ' + json.dumps({'build': alexnet_kernels.build_info(), "
            "'manifest': d.installed_manifest(), 'file': alexnet_kernels.__file__}))")
    try:
        out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120,
                             env=check.env, cwd=str(check.work))
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        if line.startswith("@@INFO "):
            return json.loads(line[7:])
    return None


def install_prebuilt_wheel(check, log_file, limit):
    """Install .whl/'s wheel and keep it if it was built from this very tree (the digest of every file it
    installs) with CUDA for sm_90.  Returns (ok, why)."""
    wheels = sorted(WHEEL_DIR.glob("alexnet_kernels-*.whl")) if WHEEL_DIR.is_dir() else []
    if not wheels:
        return False, "no prebuilt wheel in .whl/"
    wheel = wheels[-1]
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                               "--force-reinstall", "-v", str(wheel)], cwd=str(check.work), env=check.env,
                              stdout=log_file, stderr=subprocess.STDOUT, timeout=limit)
    except subprocess.TimeoutExpired:
        return False, "pip install %s timed out" % wheel.name
    if proc.returncode != 0:
        return False, "pip install %s failed (rc %s)" % (wheel.name, proc.returncode)
    info = installed_build_info(check) or {}
    build, manifest = info.get("build") or {}, info.get("manifest") or {}
    want = (check.tree or tree_identity())["package_digest"]
    if manifest.get("package_digest") != want:
        return False, "%s was built from another tree (package digest %s, this tree's %s): a file it installs " \
                      "changed since `gpu_check.py wheel`" % (wheel.name, manifest.get("package_digest"), want)
    if build.get("sources_digest") != manifest.get("sources_digest"):
        return False, "%s: its library's sources digest %s is not its manifest's %s" % (
            wheel.name, build.get("sources_digest"), manifest.get("sources_digest"))
    if not build.get("with_cuda") or WHEEL_ARCHS not in str(build.get("cuda_archs")).split(";"):
        return False, "%s has no sm_90 CUDA build (%s)" % (wheel.name, build.get("cuda_archs"))
    return True, "%s (built with torch %s at %s, package digest %s)" % (
        wheel.name, build.get("torch_version"), manifest.get("git_commit") or build.get("git_commit"), want)


def fallback_build_command():
    """The build phase's compile when no prebuilt wheel fits: against the installed torch (2.11 on the GPU
    machine), sm_90 only, every core.  CI's torch 2.11.0 leg runs exactly this (`gpu_check.py build-fallback`)."""
    env = dict(os.environ)
    env["TORCH_CUDA_ARCH_LIST"] = env.get("TORCH_CUDA_ARCH_LIST", WHEEL_ARCHS)
    env["MAX_JOBS"] = str(os.cpu_count() or 1)
    return [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-v", "."], env


def describe_installed(check):
    """What the later phases import: the installed package and whether it is this tree's."""
    info = installed_build_info(check)
    if info is None:
        return "no importable alexnet_kernels (the workers use the source tree without the extension)"
    manifest, build = info.get("manifest"), info.get("build") or {}
    tree = check.tree or {}
    library = ("library of %s sources (CUDA archs %s)" % (
        "this tree's" if build.get("sources_digest") == tree.get("sources_digest") else "OTHER", build.get("cuda_archs"))
        if build else "no compiled library")
    if manifest is None:
        where = "this checkout" if Path(info.get("file", "")).resolve().is_relative_to(REPO) else "not this checkout"
        return "%s: a source tree (%s), %s" % (info.get("file"), where, library)
    same = manifest.get("package_digest") == tree.get("package_digest")
    return "%s: installed, package digest %s (%s), %s" % (
        info.get("file"), manifest.get("package_digest"), "this tree" if same else "NOT this tree", library)


def phase_build(check):
    limit = check.phase_limit("build", later=("correctness", "memcheck", "headline"))
    log_path = check.work / "build.log"
    t0 = now()
    tree = check.tree
    with open(log_path, "w") as f:
        print("tree: commit %s, package digest %s over %d files (sources digest %s)" % (
            tree["commit"], tree["package_digest"], tree["files"], tree["sources_digest"]), file=f, flush=True)
        ok, why = install_prebuilt_wheel(check, f, limit)
        print("prebuilt wheel: %s%s" % ("installed " if ok else "not used: ", why), file=f, flush=True)
        if ok:
            seconds = now() - t0
            return {"status": "PASS", "summary": "installed the prebuilt wheel %s in %.0f s, no compiling" % (
                why, seconds), "files": ["build.log"], "build_s": round(seconds, 1), "prebuilt_wheel": True}
        cmd, env = fallback_build_command()
        env.update({k: v for k, v in check.env.items() if k not in env})
        try:
            proc = subprocess.run(cmd, cwd=str(REPO), env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, limit - (now() - t0)))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = now() - t0
    if rc != 0:
        # The later phases still run the Triton and torch paths from the source tree (no extension).
        check.env["PYTHONPATH"] = str(REPO) + os.pathsep + check.env.get("PYTHONPATH", "")
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        return {"status": "FAIL", "summary": "prebuilt wheel not used (%s); pip install failed (%s) after %.0f s; "
                "later phases use the source tree without the extension" % (why, rc, seconds),
                "log_tail": tail, "files": ["build.log"], "build_s": round(seconds, 1), "prebuilt_wheel": False,
                "failures": ["pip install failed (%s): %s" % (rc, " | ".join(tail[-6:])[-800:])]}
    return {"status": "PASS", "summary": "prebuilt wheel not used (%s); built for sm_%s in %.0f s with %s jobs" % (
        why, env["TORCH_CUDA_ARCH_LIST"].replace(".", ""), seconds, env["MAX_JOBS"]), "files": ["build.log"],
        "build_s": round(seconds, 1), "prebuilt_wheel": False}


def main_build_fallback(args):
    """The build phase's fallback compile, in this environment, output to the terminal (CI's 2.11 leg)."""
    cmd, env = fallback_build_command()
    print("gpu_check build-fallback: %s (TORCH_CUDA_ARCH_LIST=%s, MAX_JOBS=%s)" % (
        " ".join(cmd[2:]), env["TORCH_CUDA_ARCH_LIST"], env["MAX_JOBS"]), flush=True)
    return subprocess.run(cmd, cwd=str(REPO), env=env).returncode


def main_wheel(args):
    """On a CPU, before the device call: the sm_90 wheel of this tree in .whl/ (replacing older ones)."""
    WHEEL_DIR.mkdir(exist_ok=True)
    for old in WHEEL_DIR.glob("alexnet_kernels-*.whl"):
        old.unlink()
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=WHEEL_ARCHS)
    t0 = now()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w",
                           str(WHEEL_DIR), "."], cwd=str(REPO), env=env)
    if proc.returncode != 0:
        return proc.returncode
    wheels = sorted(WHEEL_DIR.glob("alexnet_kernels-*.whl"))
    if len(wheels) != 1:
        print("gpu_check wheel: expected one wheel in %s, found %s" % (WHEEL_DIR, wheels), file=sys.stderr)
        return 1
    size = wheels[0].stat().st_size
    tree = tree_identity()
    print("gpu_check wheel: %s, %.1f MiB, built in %.0f s; tree %s, package digest %s over %d files" % (
        wheels[0], size / 2**20, now() - t0, tree["commit"], tree["package_digest"], tree["files"]))
    if size > WHEEL_LIMIT_BYTES:
        print("gpu_check wheel: larger than the %d MiB the device tool carries" % (WHEEL_LIMIT_BYTES // 2**20),
              file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------------
# correctness: one worker per op, side by side, restarted after a crash

def read_jsonl(path):
    rows = []
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows


def run_op_worker(check, op, deadline, results):
    """Run (and restart after crashes) the correctness worker of one op until its cases are done or the
    deadline passes.  results[op] = the case rows."""
    folder = check.work / "correctness"
    rows_path, progress_path = folder / ("%s.jsonl" % op), folder / ("%s.progress" % op)
    stderr_path = folder / ("%s.stderr.log" % op)
    for p in (rows_path, progress_path, stderr_path):
        if p.exists():
            p.unlink()
    start, restarts, total = 0, 0, None
    while True:
        remaining = deadline - now()
        if remaining < 2:
            break
        cmd = check.python("worker", "correctness", "--op", op, "--out", str(check.work), "--start", str(start))
        if check.dry_run:
            cmd.append("--dry-run")
        with open(stderr_path, "a") as err:
            proc = subprocess.Popen(cmd, env=check.env, cwd=str(check.work), stdout=err, stderr=subprocess.STDOUT)
            try:
                rc = proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = "timeout"
        progress = read_jsonl(progress_path)
        done = {r["index"] for r in read_jsonl(rows_path)}
        if progress and progress[0].get("total") is not None:
            total = progress[0]["total"]
        begun = [r for r in progress if "begin" in r and r["begin"] >= start]
        if rc == 0 or rc == "timeout":
            break
        if not begun:
            # it died before its first case (an import error, a bad installation): do not loop on it
            tail = stderr_path.read_text(errors="replace").splitlines()[-5:] if stderr_path.exists() else []
            with open(rows_path, "a") as f:
                f.write(json.dumps({"index": start, "id": "%s/worker" % op, "status": "FAIL",
                                    "detail": "the worker exited %s before its case %d: %s"
                                              % (rc, start, " | ".join(tail)[-600:])}) + "\n")
            break
        # The worker died (a signal, a CUDA error that poisons the context): the case it had begun fails,
        # and a fresh worker takes the next one.
        last = begun[-1] if begun else None
        if last is not None and last["begin"] not in done:
            tail = stderr_path.read_text(errors="replace").splitlines()[-5:] if stderr_path.exists() else []
            row = {"index": last["begin"], "id": last["id"], "status": "FAIL",
                   "detail": "the worker died during this case (exit %s): %s" % (rc, " | ".join(tail)[-600:])}
            with open(rows_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            done.add(last["begin"])
        resumed = max(done) + 1 if done else start + 1
        if total is not None and resumed >= total:
            break
        start, restarts = resumed, restarts + 1
    rows = sorted(read_jsonl(rows_path), key=lambda r: r["index"])
    ids = [r for r in read_jsonl(progress_path) if "ids" in r]
    if ids:
        finished = {r["index"] for r in rows}
        for i, case_id in enumerate(ids[0]["ids"]):
            if i not in finished:
                rows.append({"index": i, "id": case_id, "status": "NOT RUN",
                             "detail": "the phase's time budget ran out first"})
    results[op] = {"rows": sorted(rows, key=lambda r: r["index"]), "restarts": restarts}


def phase_correctness(check):
    limit = check.phase_limit("correctness", later=("memcheck", "headline"))
    deadline = now() + limit
    (check.work / "correctness").mkdir(exist_ok=True)
    results = {}
    # Side by side: the workers' time is mostly Triton's JIT on the CPU.  On a 2-core dry run two at a time.
    width = len(CORRECTNESS_OPS) if not check.dry_run else 2
    pending = list(CORRECTNESS_OPS)
    running = []
    while pending or running:
        while pending and len(running) < width:
            op = pending.pop(0)
            t = threading.Thread(target=run_op_worker, args=(check, op, deadline, results), daemon=True)
            t.start()
            running.append(t)
        running[0].join(timeout=max(0.1, deadline - now() + 30))
        running = [t for t in running if t.is_alive()]
        if now() > deadline + 60:
            break
    lines, counts = [], {}
    for op in CORRECTNESS_OPS:
        res = results.get(op, {"rows": [], "restarts": 0})
        for r in res["rows"]:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
            lines.append("%-7s %s%s" % (r["status"], r["id"], (": " + r["detail"]) if r.get("detail") else ""))
        if res["restarts"]:
            lines.append("NOTE    %s: the worker was restarted %d time(s) after a crash" % (op, res["restarts"]))
    (check.work / "correctness.txt").write_text("\n".join(lines) + "\n")
    write_json(check.work / "correctness.json", results)
    status = "FAIL" if counts.get("FAIL") else ("INCOMPLETE" if counts.get("NOT RUN") else "PASS")
    if status == "PASS" and not counts.get("PASS"):
        status = "EMPTY"   # every case skipped: nothing was checked, which is not a pass
    summary = ", ".join("%d %s" % (v, k) for k, v in sorted(counts.items())) or "no cases"
    return {"status": status, "summary": summary, "counts": counts, "files": ["correctness.txt", "correctness.json"],
            "failures": [ln for ln in lines if ln.startswith("FAIL")][:40]}


# --------------------------------------------------------------------------------------------------
# memcheck: compute-sanitizer over the sanitize worker

# A report line of a memory or race error.  "Program hit <CUDA error> on CUDA API call" lines are API errors:
# torch, Triton and cuDNN probe the driver and catch what it returns, so they are counted apart, not as errors
# (and --report-api-errors no asks the sanitizer not to print them at all).
SANITIZER_ERROR = re.compile(r"^=+\s+(Invalid|Race|Uninitialized|Leaked|Barrier error|Malformed|"
                             r"Out-of-range|Misaligned|Warp|Error|.*hazard)", re.I)
SANITIZER_API_ERROR = re.compile(r"^=+\s+Program hit ", re.I)
SANITIZER_AT = re.compile(r"^=+\s+at\s+(?:0x[0-9a-f]+ in\s+)?(.+)$", re.I)
SANITIZER_SUMMARY = re.compile(r"ERROR SUMMARY:\s*(\d+) error", re.I)
# The sanitizer cannot work on this machine (gVisor: "Device not supported", then error 999 at the first
# allocation), or does not know an option.
SANITIZER_REFUSED = re.compile(r"Device not supported|device is not supported|error 999", re.I)
SANITIZER_BAD_OPTION = re.compile(r"(unrecognized|unrecognised|unknown|invalid) option|Error parsing command", re.I)
PLANTED_CASE = "selftest/planted-out-of-bounds-write"


def kernel_name(frame):
    """The kernel's name from a sanitizer frame: 'void ns::name<float>(args)+0x1b0 in file.cu:42' -> 'name'."""
    frame = re.split(r"\+0x[0-9a-fA-F]+", frame.strip())[0]
    frame = re.sub(r"\(.*$", "", frame)
    frame = re.sub(r"<.*$", "", frame).strip()
    return frame.split()[-1].split("::")[-1] if frame else "(unnamed)"


def parse_sanitizer(text):
    """{"cases": {case: {"status", "errors": {kernel: n}}}, "total": the sanitizer's ERROR SUMMARY or None,
    "unattributed": errors outside any case, "api_errors": CUDA API errors seen (not errors of ours),
    "expected": the case count the worker announced}.  The worker prints @@CASE-BEGIN / @@CASE-END around each
    case and synchronises before the end marker, so the sanitizer's reports of a case fall between its markers.
    Each report counts once, under the kernel its first 'at ...' frame names ('(unnamed)' when none does)."""
    cases, current, pending, total, unattributed, expected, api = {}, None, None, None, {}, None, 0
    for line in text.splitlines():
        if line.startswith("@@CASES "):
            expected = int(line.split()[1])
            continue
        if line.startswith("@@CASE-BEGIN "):
            current = line.split(" ", 1)[1].strip()
            cases[current] = {"status": "CRASHED", "errors": {}}
            pending = None
            continue
        if line.startswith("@@CASE-END "):
            name, _, status = line[len("@@CASE-END "):].partition(" ")
            if name in cases:
                cases[name]["status"] = status.strip() or "DONE"
            current, pending = None, None
            continue
        m = SANITIZER_SUMMARY.search(line)
        if m:
            total = int(m.group(1))
            continue
        if SANITIZER_API_ERROR.match(line):
            api += 1
            pending = None
            continue
        target = cases[current]["errors"] if current in cases else unattributed
        if SANITIZER_ERROR.match(line):
            target["(unnamed)"] = target.get("(unnamed)", 0) + 1
            pending = target
            continue
        m = SANITIZER_AT.match(line)
        if m and pending is not None:
            pending["(unnamed)"] -= 1
            if not pending["(unnamed)"]:
                del pending["(unnamed)"]
            name = kernel_name(m.group(1))
            pending[name] = pending.get(name, 0) + 1
            pending = None
    return {"cases": cases, "total": total, "unattributed": unattributed, "expected": expected, "api_errors": api}


def find_sanitizer():
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        cand = Path(root or "/nonexistent") / "bin" / "compute-sanitizer"
        if cand.exists():
            return str(cand)
    return None


# (run name, tool, the sanitize worker's --select): the planted write proves the sanitizer reports here.
SANITIZER_RUNS = (("planted", "memcheck", "planted"), ("memcheck", "memcheck", "all"),
                  ("racecheck", "racecheck", "cuda-shared"))


def sanitizer_command(sanitizer, tool, api_flag=True):
    cmd = [sanitizer, "--tool", tool, "--print-limit", "100", "--check-exit-code", "no"]
    if api_flag:
        cmd += ["--report-api-errors", "no"]
    return cmd + (["--leak-check", "no"] if tool == "memcheck" else ["--racecheck-report", "hazard"])


def memcheck_dry(check, limit, reason):
    """No sanitizer here: the worker's own code still runs (without it), so a broken case shows up first."""
    cmd = check.python("worker", "sanitize", "--select", "all") + (["--dry-run"] if check.dry_run else [])
    out = subprocess.run(cmd, env=check.env, cwd=str(check.work), capture_output=True, text=True, timeout=limit)
    text = out.stdout + out.stderr
    (check.work / "memcheck-nosanitizer.log").write_text(text)
    parsed = parse_sanitizer(text)
    bad = [c for c, v in parsed["cases"].items() if v["status"] not in ("DONE", "SKIP")]
    done = sum(1 for v in parsed["cases"].values() if v["status"] == "DONE")
    lines = ["compute-sanitizer SKIPPED (%s); the sanitize worker ran %d of %s cases without it (%d done), "
             "%d did not finish: %s" % (reason, len(parsed["cases"]), parsed["expected"], done, len(bad),
                                        ", ".join(bad) or "none")]
    lines += ["  %-56s %s" % (c, v["status"]) for c, v in parsed["cases"].items()]
    (check.work / "memcheck.txt").write_text("\n".join(lines) + "\n")
    failures = ["%s did not finish without the sanitizer: see memcheck-nosanitizer.log" % c for c in bad]
    if parsed["expected"] is None or len(parsed["cases"]) < parsed["expected"]:
        failures.append("the sanitize worker stopped early (exit %s): %s" % (
            out.returncode, " | ".join(text.splitlines()[-4:])[-500:]))
    return {"status": "FAIL" if failures else "SKIPPED",
            "summary": "compute-sanitizer not run (%s); worker cases: %d, done %d, unfinished %d"
                       % (reason, len(parsed["cases"]), done, len(bad)),
            "files": ["memcheck.txt", "memcheck-nosanitizer.log"], "failures": failures}


def start_sanitizer_runs(check, sanitizer, env, api_flag):
    procs = {}
    for run, tool, select in SANITIZER_RUNS:
        log_path = check.work / ("%s.log" % run)
        cmd = sanitizer_command(sanitizer, tool, api_flag) + check.python("worker", "sanitize", "--select", select)
        f = open(log_path, "w")
        procs[run] = (subprocess.Popen(cmd, env=env, cwd=str(check.work), stdout=f, stderr=subprocess.STDOUT),
                      f, log_path)
    return procs


def stop_all(procs):
    for proc, f, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        f.close()


def wait_sanitizer_runs(procs, deadline):
    """Wait for the runs; stop all of them at once if the sanitizer refuses the device or an option.
    Returns ({run: exit code or "timeout"}, None) or (None, ("refused" | "option", the line))."""
    exits = {}
    while True:
        for run, (proc, f, log_path) in procs.items():
            if run not in exits and proc.poll() is not None:
                exits[run] = proc.returncode
        for run, (proc, f, log_path) in procs.items():
            f.flush()
            head = log_path.read_text(errors="replace")[:20000] if log_path.exists() else ""
            for kind, pattern in (("refused", SANITIZER_REFUSED), ("option", SANITIZER_BAD_OPTION)):
                m = pattern.search(head)
                if m and "@@CASE-END" not in head[:m.start()]:
                    line = head[head.rfind("\n", 0, m.start()) + 1:].splitlines()[0]
                    stop_all(procs)
                    return None, (kind, line.strip())
        if len(exits) == len(procs):
            break
        if now() > deadline:
            for run, (proc, f, _) in procs.items():
                if run not in exits:
                    proc.kill()
                    proc.wait()
                    exits[run] = "timeout"
            break
        time.sleep(0.5)
    for proc, f, _ in procs.values():
        f.close()
    return exits, None


def phase_memcheck(check):
    limit = check.phase_limit("memcheck", later=("headline",))
    sanitizer = find_sanitizer()
    if check.dry_run or sanitizer is None:
        return memcheck_dry(check, limit, "dry run" if check.dry_run else "compute-sanitizer not found")
    env = dict(check.env)
    # Without torch's caching allocator every tensor is its own cudaMalloc, so memcheck sees an access past a
    # tensor's end (inside a cached block it would land in memory the process owns and go unreported).
    env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
    deadline = now() + limit
    api_flag = True
    while True:
        procs = start_sanitizer_runs(check, sanitizer, env, api_flag)
        exits, stopped = wait_sanitizer_runs(procs, deadline)
        if stopped and stopped[0] == "option" and api_flag:
            api_flag = False   # an older sanitizer without --report-api-errors: API errors are filtered here
            continue
        break
    files = ["memcheck.txt", "memcheck.json"] + ["%s.log" % r for r, _, _ in SANITIZER_RUNS]
    if stopped:
        kind, line = stopped
        msg = ("compute-sanitizer refused this device (%r): no sanitizer verdict on this machine (on gVisor "
               "machines it cannot run; ../.library/device/KINDS.md)" % line) if kind == "refused" else \
              "compute-sanitizer rejected its command line: %r" % line
        (check.work / "memcheck.txt").write_text(msg + "\n")
        return {"status": "REFUSED" if kind == "refused" else "ERROR", "summary": msg, "files": files,
                "failures": [] if kind == "refused" else [msg]}
    reports, lines, failures = {}, [], []
    status = "PASS"
    for run, tool, select in SANITIZER_RUNS:
        log_path = check.work / ("%s.log" % run)
        rc = exits[run]
        parsed = parse_sanitizer(log_path.read_text(errors="replace"))
        reports[run] = dict(parsed, exit=rc, tool=tool)
        n_err = sum(sum(v["errors"].values()) for v in parsed["cases"].values()) + sum(parsed["unattributed"].values())
        done = sum(1 for v in parsed["cases"].values() if v["status"] == "DONE")
        if run == "planted":
            if n_err or parsed["total"]:
                lines.append("planted: the out-of-bounds write was reported (%d errors): the sanitizer works here"
                             % max(n_err, parsed["total"] or 0))
            else:
                status = "FAIL"
                msg = ("the sanitizer did not report the planted out-of-bounds write (exit %s, ERROR SUMMARY %s): "
                       "its silence below proves nothing" % (rc, parsed["total"]))
                lines.append("planted: " + msg)
                failures.append(msg)
            continue
        lines.append("%s: exit %s, %d of %s cases done, %d errors in cases, ERROR SUMMARY %s, %d CUDA API errors "
                     "of other libraries ignored" % (run, rc, done, parsed["expected"], n_err, parsed["total"],
                                                     parsed["api_errors"]))
        for c, v in parsed["cases"].items():
            errs = ", ".join("%s: %d" % kv for kv in sorted(v["errors"].items())) or "0 errors"
            lines.append("  %-56s %-8s %s" % (c, v["status"], errs))
            if v["errors"] or v["status"] not in ("DONE", "SKIP"):
                status = "FAIL"
                failures.append("%s %s: %s (%s)" % (run, c, errs, v["status"]))
        if parsed["unattributed"]:
            lines.append("  outside any case: %s" % parsed["unattributed"])
            failures.append("%s: errors outside any case: %s" % (run, parsed["unattributed"]))
            status = "FAIL"
        ended = sum(1 for v in parsed["cases"].values() if v["status"] != "CRASHED")
        if parsed["expected"] is None or ended < parsed["expected"]:
            # the sanitized worker did not get through its cases: never a silent pass
            tail = " | ".join(log_path.read_text(errors="replace").splitlines()[-4:])[-400:]
            lines.append("  only %d of %s cases finished: %s" % (ended, parsed["expected"], tail))
            if rc != "timeout":
                status = "FAIL"
                failures.append("%s: only %d of %s cases finished (exit %s): %s" % (run, ended, parsed["expected"],
                                                                                  rc, tail))
            elif status == "PASS":
                status = "INCOMPLETE"
        if done == 0 and status == "PASS":
            status = "EMPTY"
    (check.work / "memcheck.txt").write_text("\n".join(lines) + "\n")
    write_json(check.work / "memcheck.json", reports)
    summary = "; ".join(ln for ln in lines if not ln.startswith("  "))
    return {"status": status, "summary": summary, "files": files, "failures": failures[:40]}


# --------------------------------------------------------------------------------------------------
# headline and tests

def phase_headline(check):
    limit = check.phase_limit("headline")
    cmd = check.python("worker", "headline", "--out", str(check.work), "--seconds", "%.0f" % max(1.0, limit - 15))
    if check.dry_run:
        cmd.append("--dry-run")
    log_path = check.work / "headline.log"
    with open(log_path, "w") as f:
        try:
            rc = subprocess.run(cmd, env=check.env, cwd=str(check.work), stdout=f, stderr=subprocess.STDOUT,
                                timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    rows = read_jsonl(check.work / "headline.jsonl")
    state = {}
    if (check.work / "headline-state.json").exists():
        state = json.loads((check.work / "headline-state.json").read_text())
    measured = sum(1 for r in rows if r.get("kind") == "row")
    failed = [r for r in rows if r.get("kind") == "fail"]
    not_run = state.get("not_run", [])
    status = "FAIL" if failed or rc not in (0, "timeout") else ("INCOMPLETE" if not_run or rc == "timeout" else "PASS")
    if status == "PASS" and not measured:
        status = "EMPTY"   # no row measured: nothing was shown, which is not a pass
    return {"status": status, "summary": "%d rows measured, %d skipped, %d failed, %d not run (exit %s)" % (
        measured, sum(1 for r in rows if r.get("kind") == "skip"), len(failed), len(not_run), rc),
        "failures": [r["detail"] for r in failed][:20] + ([] if rc in (0, "timeout") else [
            "the headline worker exited %s: %s" % (rc, " | ".join(log_path.read_text(errors="replace")
                                                                   .splitlines()[-4:])[-500:])]),
        "not_run": not_run[:50],
        "files": ["headline.log", "headline.jsonl", "headline/"]}


def phase_tests(check):
    left = check.left() - SUMMARY_RESERVE_S
    if left < 30:
        check.skip_phase("tests", "no time left (%.0f s)" % left)
        return None
    env = dict(check.env)
    env["ALEXNET_KERNELS_TEST_TIMEOUT"] = str(TEST_TIMEOUT_S)
    env.pop("TRITON_INTERPRET", None)
    t0 = now()
    with open(check.work / "tests.log", "w") as f:
        try:
            rc = subprocess.run([sys.executable, "-P", "-m", "pytest", str(TESTS_DIR), "-q", "-rfs",
                                 "-p", "no:cacheprovider"], env=env, cwd=str(REPO), stdout=f,
                                stderr=subprocess.STDOUT, timeout=left - 5).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    tail = (check.work / "tests.log").read_text(errors="replace").splitlines()
    last = next((ln for ln in reversed(tail) if re.search(r"\d+ (passed|failed)", ln)), "no pytest summary line")
    result = {"status": "PASS" if rc == 0 else ("INCOMPLETE" if rc == "timeout" else "FAIL"),
              "summary": "%s (exit %s, %.0f s)" % (last.strip("= "), rc, now() - t0), "files": ["tests.log"],
              "failures": [ln for ln in tail if ln.startswith("FAILED") or ln.startswith("ERROR")][:40]}
    left = check.left() - SUMMARY_RESERVE_S
    if rc == 0 and left > 40:
        with open(check.work / "tune.log", "w") as f:
            try:
                subprocess.run([sys.executable, "-P", str(BENCH_DIR / "tools" / "tune_lrn_triton.py"), "--quick"],
                               env=env, cwd=str(REPO), stdout=f, stderr=subprocess.STDOUT, timeout=left - 5)
                result["summary"] += "; LRN tile sweep in tune.log"
            except subprocess.TimeoutExpired:
                result["summary"] += "; LRN tile sweep cut at the deadline (tune.log)"
        result["files"].append("tune.log")
    return result


# --------------------------------------------------------------------------------------------------
# gpu_check.md / .json

def write_summary(check):
    """gpu_check.md and gpu_check.json in the work folder (publish() copies them to $OUT)."""
    env = check.environment or {}
    tree = check.tree or {}
    data = {"tool": "benchmarks/tools/gpu_check.sh", "dry_run": check.dry_run, "environment": env, "tree": tree,
            "elapsed_s": round(now() - check.start, 1), "budgets_s": check.budgets, "total_s": check.total_s,
            "phases": check.phases, "archive": getattr(check, "archive", None)}
    write_json(check.work / "gpu_check.json", data)
    md = ["# GPU check%s" % (" (DRY RUN on a CPU: tiny shapes, no GPU; not a measurement)" if check.dry_run else ""),
          "",
          "- device: %s (%s, %s SMs, %s GiB), driver %s" % (env.get("device"), env.get("compute_capability"),
                                                         env.get("sm_count"), env.get("gpu_memory_gib"),
                                                         env.get("driver")),
          "- python %s, torch %s (CUDA %s, cuDNN %s), triton %s" % (env.get("python"), env.get("torch"),
                                                                  env.get("cuda"), env.get("cudnn"), env.get("triton")),
          "- alexnet_kernels %s, build %s" % (env.get("alexnet_kernels"), env.get("alexnet_kernels_build")),
          "- tree: commit %s, package digest %s over %s files; tested: %s" % (
              tree.get("commit", env.get("commit")), tree.get("package_digest"), tree.get("files"),
              tree.get("installed", "not checked yet")),
          "- started %s, %.0f s so far; every other file is in %s" % (env.get("started"), now() - check.start,
                                                                      ARCHIVE),
          "", "| phase | status | seconds | summary |", "|---|---|---|---|"]
    for name in PHASES:
        p = check.phases.get(name)
        if p is None:
            md.append("| %s | NOT_REACHED | | |" % name)
        else:
            md.append("| %s | %s | %s | %s |" % (name, p["status"], p.get("seconds", ""),
                                                  str(p.get("summary", "")).replace("|", "/")))
    for name in PHASES:
        fails = (check.phases.get(name) or {}).get("failures")
        if fails:
            md += ["", "## %s failures" % name, ""] + ["- " + str(f).replace("\n", " ")[:500] for f in fails]
    headline_md = check.work / "headline" / "summary.md"
    if headline_md.exists():
        md += ["", "## Headline benchmark", "", headline_md.read_text()]
    (check.work / "gpu_check.md").write_text("\n".join(md) + "\n")


def clear_out(out):
    """$OUT starts empty of our files: a previous call's archive must not pass for this one's."""
    for name in OUT_FILES:
        for p in (out / name, out / (name + ".tmp")):
            if p.exists():
                p.unlink()


def main_run(args):
    check = Check(args.out, args.dry_run, args.total_s, work=args.work)
    clear_out(check.out)
    log("results in %s (the work folder %s is packed into %s at every phase end)%s" % (
        check.out, check.work, ARCHIVE, " (dry run)" if args.dry_run else ""))
    check.tree = tree_identity()
    log("tree: commit %s, package digest %s over %d files" % (check.tree["commit"], check.tree["package_digest"],
                                                              check.tree["files"]))
    check.environment = {"commit": check.tree["commit"], "dry_run": check.dry_run}
    check.publish()
    if args.dry_run or args.skip_build:
        check.skip_phase("build", "dry run: the extension is built by the caller" if args.dry_run
                         else "--skip-build")
    else:
        check.run_phase("build", lambda: phase_build(check))
    check.environment = probe_environment(check)
    check.tree["installed"] = describe_installed(check)
    log("testing: %s" % check.tree["installed"])
    check.publish()
    check.run_phase("correctness", lambda: phase_correctness(check))
    check.run_phase("memcheck", lambda: phase_memcheck(check))
    check.run_phase("headline", lambda: phase_headline(check))
    if args.dry_run:
        check.skip_phase("tests", "dry run: pytest runs the test suite itself")
    else:
        result = phase_tests(check)
        if result is not None:
            check.phases["tests"] = result
    log("done in %.0f s: %s" % (now() - check.start, ", ".join(
        "%s %s" % (k, v["status"]) for k, v in check.phases.items())))
    publish(check, final=True)   # last in the output: the summary the tail brings back
    bad = [k for k, v in check.phases.items() if v["status"] in ("FAIL", "ERROR")]
    return 1 if bad else 0


def main_verify(args):
    """The device tool's return rules on a folder (the dry run's $OUT in CI): exit 1 and say why if broken."""
    problems = verify_out(args.out)
    for p in problems:
        print("gpu_check verify: %s" % p)
    if not problems:
        print("gpu_check verify: %s holds %d files, all within the device's return rules" % (
            args.out, sum(1 for p in Path(args.out).rglob("*") if p.is_file())))
    return 1 if problems else 0


# ==================================================================================================
# Workers (imported lazily: torch, the package and the benchmark modules load only here)
# ==================================================================================================

def main_worker(args):
    sys.path.insert(0, str(BENCH_DIR))
    sys.path.insert(0, str(TESTS_DIR))
    sys.path.insert(0, str(BENCH_DIR / "tools"))
    import gpu_check_cases as cases  # noqa: E402  (benchmarks/tools/gpu_check_cases.py)
    if args.kind == "correctness":
        return cases.correctness_worker(args.op, Path(args.out), args.start, args.dry_run)
    if args.kind == "sanitize":
        return cases.sanitize_worker(args.select, args.dry_run)
    if args.kind == "headline":
        return cases.headline_worker(Path(args.out), args.seconds, args.dry_run)
    raise SystemExit("unknown worker %r" % args.kind)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every phase")
    run.add_argument("--out", required=True)
    run.add_argument("--dry-run", action="store_true")
    run.add_argument("--skip-build", action="store_true")
    run.add_argument("--total-s", type=float, default=None, help="default %d s (a dry run: %d s)" % (
        TOTAL_S, TOTAL_S * DRY_RUN_BUDGET_SCALE))
    run.add_argument("--work", help="the folder the phases write in (default: a new temporary folder)")
    sub.add_parser("wheel", help="on a CPU: build the sm_90 wheel the build phase installs (.whl/)")
    sub.add_parser("build-fallback", help="the build phase's compile when no wheel fits (CI's torch 2.11 leg)")
    verify = sub.add_parser("verify", help="check a folder against the device tool's return rules")
    verify.add_argument("--out", required=True)
    worker = sub.add_parser("worker", help="internal: one phase's worker process")
    worker.add_argument("kind", choices=("correctness", "sanitize", "headline"))
    worker.add_argument("--op")
    worker.add_argument("--out", default=".")
    worker.add_argument("--start", type=int, default=0)
    worker.add_argument("--select", default="all")
    worker.add_argument("--seconds", type=float, default=BUDGETS["headline"])
    worker.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "run":
        return main_run(args)
    if args.command == "wheel":
        return main_wheel(args)
    if args.command == "build-fallback":
        return main_build_fallback(args)
    if args.command == "verify":
        return main_verify(args)
    return main_worker(args)


if __name__ == "__main__":
    sys.exit(main())
