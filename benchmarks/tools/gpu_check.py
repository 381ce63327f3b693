"""The one-call GPU check: every answer that matters from one device command, in a fixed time.

    bash benchmarks/tools/gpu_check.sh              # on the GPU machine (ends within ~530 s)
    bash benchmarks/tools/gpu_check.sh --dry-run    # on a CPU: every phase's code at tiny shapes (CI runs it)

Phases, in order, each with its own time budget (seconds on an H200; the argument for each is in
benchmarks/results/README.md).  Every phase writes its files under $OUT the moment it ends, and rewrites
gpu_check.md / gpu_check.json, so a call killed at its limit still returns everything that finished.  One
failing case never stops the others.

  build        the wheel built on a CPU beforehand (`gpu_check.py wheel`: .whl/, carried to the GPU machine
               with the source) installed with pip in seconds, if its sources digest matches the source
               tree; else pip install --no-build-isolation --no-deps . for sm_90 with every core (budget 120 s)
  correctness  every op x backend x dtype x layout, forward and backward, at the AlexNet shapes
               (batch 128) and two odd shapes, against a float64 reference; a CUDA-graph capture +
               replay of each op; the AlexNet, kernels="ours" against kernels="torch", on one device and
               on devices=("cuda:0", "cuda:0").  One worker process per op, run side by side (Triton's
               JIT compiles on the CPU: 16 cores); a worker that crashes (an illegal address poisons the
               CUDA context) is restarted after the case that crashed it                        (budget 120 s)
  memcheck     compute-sanitizer --tool memcheck over every CUDA and Triton kernel once at small odd
               shapes, and --tool racecheck over the CUDA kernels that use shared memory      (budget 60 s)
  headline     the benchmark cases that decide the performance bars, every provider in one process
               (do_bench medians, L2 flushed; copy bandwidth and bf16 matmul peak measured first); runs
               the bench_<op>.py GPU test functions themselves, so providers, traffic models and
               correctness checks are the benchmark suite's                                   (budget 240 s)
  tests        if time is left: pytest tests on the GPU with a per-test timeout, then the LRN tile sweep

Autotuning is kept out of the first four phases (ALEXNET_KERNELS_AUTOTUNE=0: the conv kernels' first tile
configuration; torch.compile in its default mode).  Files in $OUT: build.log, correctness.txt (one line per
case: PASS / FAIL / SKIP with the error or reason) and correctness/<op>.jsonl, memcheck.txt and the sanitizer
logs, headline/<op>-*.md/.json (the benchmark suite's results files) and headline.jsonl, tests.log,
tune.log, and gpu_check.md / gpu_check.json (device, driver, versions, commit, date, each phase's status).

Before the device call, on the CPU: `python3 benchmarks/tools/gpu_check.py wheel` builds that wheel into
.whl/ (sm_90; the device tool's `carry: [".whl"]` brings it along).

Internal entry points (used by the phases): `gpu_check.py worker correctness|sanitize|headline ...`.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
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
BUDGETS = {"build": 120, "correctness": 120, "memcheck": 60, "headline": 240}
SUMMARY_RESERVE_S = 10  # kept back at the end for the last gpu_check.md / .json
TEST_TIMEOUT_S = 60     # per test in the tests phase (tests/conftest.py: ALEXNET_KERNELS_TEST_TIMEOUT)
# One worker process per entry; conv is split by dtype because its Triton kernels are the slowest to compile.
CORRECTNESS_OPS = ("conv-bf16", "conv-fp16", "conv-fp32", "conv-fp32-tf32", "lrn", "pool", "fused", "dropout",
                   "alexnet")


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
    """The state of one gpu_check call: phases, their status and files, the deadline."""

    def __init__(self, out, dry_run, total_s):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.dry_run = dry_run
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

    def left(self):
        return self.deadline - now()

    def phase_limit(self, name, later=()):
        """Seconds this phase may run: until its planned end (the call's start + the budgets up to and
        including it; time an earlier phase left unused carries over), at least half its budget when earlier
        phases overran, and never so long that the later phases lose more than half of theirs."""
        names = list(BUDGETS)
        planned_end = self.start + sum(BUDGETS[p] for p in names[:names.index(name) + 1])
        limit = max(0.5 * BUDGETS[name], planned_end - now())
        reserve = sum(0.5 * BUDGETS[p] for p in later) + SUMMARY_RESERVE_S
        return max(5.0, min(limit, self.left() - reserve))

    def run_phase(self, name, fn):
        t0 = now()
        log("phase %s: start (%.0f s left in the call)" % (name, self.left()))
        try:
            result = fn() or {}
        except Exception as exc:  # a phase's own bug must not stop the later phases
            result = {"status": "ERROR", "summary": "%s: %s" % (type(exc).__name__, first_line(exc)),
                      "traceback": traceback.format_exc()}
        result.setdefault("status", "DONE")
        result["seconds"] = round(now() - t0, 1)
        self.phases[name] = result
        log("phase %s: %s in %.1f s -- %s" % (name, result["status"], result["seconds"], result.get("summary", "")))
        self.write_summary()
        return result

    def skip_phase(self, name, reason):
        self.phases[name] = {"status": "SKIPPED", "seconds": 0.0, "summary": reason}
        log("phase %s: skipped -- %s" % (name, reason))
        self.write_summary()

    def python(self, *args):
        # -P: the checkout is not put on sys.path, so the installed package (with its extension) is imported.
        return [sys.executable, "-P", str(ME)] + list(args)

    def write_summary(self):
        write_summary(self)


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
    code = r"""
import json, platform, subprocess, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
try:
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
except Exception:
    info["cudnn"] = None
try:
    import triton
    info["triton"] = triton.__version__
except Exception as exc:
    info["triton"] = "unavailable (%s)" % exc
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, compute_capability="sm_%d%d" % (p.major, p.minor), sm_count=p.multi_processor_count,
                gpu_memory_gib=round(p.total_memory / 2**30, 1), gpus=torch.cuda.device_count())
else:
    info["device"] = "cpu (no CUDA device)"
try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
except Exception:
    info["driver"] = None
try:
    import alexnet_kernels
    info["alexnet_kernels"] = alexnet_kernels.__version__
    info["alexnet_kernels_file"] = alexnet_kernels.__file__
    info["alexnet_kernels_build"] = alexnet_kernels.build_info()
except Exception as exc:
    info["alexnet_kernels"] = "import failed: %s: %s" % (type(exc).__name__, exc)
print("@@ENV " + json.dumps(info, default=str))
"""
    env = {"commit": git_commit(), "date": check.started_at.date().isoformat(),
           "started": check.started_at.isoformat(timespec="seconds"), "host_python": platform.python_version(),
           "cpu_count": os.cpu_count(), "dry_run": check.dry_run}
    try:
        out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120,
                             env=check.env, cwd=str(check.out))
        for line in out.stdout.splitlines():
            if line.startswith("@@ENV "):
                env.update(json.loads(line[6:]))
        if "torch" not in env:
            env["probe_error"] = first_line(out.stderr[-2000:] or out.stdout[-2000:])
    except (OSError, subprocess.SubprocessError) as exc:
        env["probe_error"] = "%s: %s" % (type(exc).__name__, exc)
    return env


# --------------------------------------------------------------------------------------------------
# build

def sources_digest():
    """The source tree's digest, as setup.py bakes it into the library (alexnet_kernels/_sources_digest.py)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_ak_sources_digest",
                                                  REPO / "alexnet_kernels" / "_sources_digest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.sources_digest(str(REPO))


def installed_build_info(check):
    """build_info() of the installed package, imported from outside the checkout, or None."""
    code = "import json, alexnet_kernels; print('@@INFO ' + json.dumps(alexnet_kernels.build_info()))"
    try:
        out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120,
                             env=check.env, cwd=str(check.out))
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        if line.startswith("@@INFO "):
            return json.loads(line[7:])
    return None


def install_prebuilt_wheel(check, log_file, limit):
    """Install .whl/'s wheel and keep it if it was built from these sources with CUDA for sm_90.
    Returns (ok, why)."""
    wheels = sorted(WHEEL_DIR.glob("alexnet_kernels-*.whl")) if WHEEL_DIR.is_dir() else []
    if not wheels:
        return False, "no prebuilt wheel in .whl/"
    wheel = wheels[-1]
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                               "--force-reinstall", "-v", str(wheel)], cwd=str(check.out), env=check.env,
                              stdout=log_file, stderr=subprocess.STDOUT, timeout=limit)
    except subprocess.TimeoutExpired:
        return False, "pip install %s timed out" % wheel.name
    if proc.returncode != 0:
        return False, "pip install %s failed (rc %s)" % (wheel.name, proc.returncode)
    info = installed_build_info(check) or {}
    want = sources_digest()
    if info.get("sources_digest") != want:
        return False, "%s was built from other sources (digest %s, the tree's %s)" % (
            wheel.name, info.get("sources_digest"), want)
    if not info.get("with_cuda") or WHEEL_ARCHS not in str(info.get("cuda_archs")).split(";"):
        return False, "%s has no sm_90 CUDA build (%s)" % (wheel.name, info.get("cuda_archs"))
    return True, "%s (built with torch %s at %s, digest %s)" % (wheel.name, info.get("torch_version"),
                                                               info.get("git_commit"), want)


def phase_build(check):
    limit = check.phase_limit("build", later=("correctness", "memcheck", "headline"))
    env = dict(check.env)
    env["TORCH_CUDA_ARCH_LIST"] = env.get("TORCH_CUDA_ARCH_LIST", WHEEL_ARCHS)
    env["MAX_JOBS"] = str(os.cpu_count() or 1)
    log_path = check.out / "build.log"
    t0 = now()
    with open(log_path, "w") as f:
        ok, why = install_prebuilt_wheel(check, f, limit)
        print("prebuilt wheel: %s%s" % ("installed " if ok else "not used: ", why), file=f, flush=True)
        if ok:
            seconds = now() - t0
            print("build: prebuilt wheel installed in %.0f s" % seconds, flush=True)
            return {"status": "PASS", "summary": "installed the prebuilt wheel %s in %.0f s, no compiling" % (
                why, seconds), "files": ["build.log"], "build_s": round(seconds, 1), "prebuilt_wheel": True}
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-v",
                                   "."], cwd=str(REPO), env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, limit - (now() - t0)))
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = now() - t0
    print("build: %.0f s" % seconds, flush=True)
    if rc != 0:
        # The later phases still run the Triton and torch paths from the source tree (no extension).
        check.env["PYTHONPATH"] = str(REPO) + os.pathsep + check.env.get("PYTHONPATH", "")
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        return {"status": "FAIL", "summary": "pip install failed (%s) after %.0f s; later phases use the source "
                "tree without the extension" % (rc, seconds), "log_tail": tail, "files": ["build.log"],
                "build_s": round(seconds, 1), "prebuilt_wheel": False}
    return {"status": "PASS", "summary": "prebuilt wheel not used (%s); built for sm_%s in %.0f s with %s jobs" % (
        why, env["TORCH_CUDA_ARCH_LIST"].replace(".", ""), seconds, env["MAX_JOBS"]), "files": ["build.log"],
        "build_s": round(seconds, 1), "prebuilt_wheel": False}


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
    print("gpu_check wheel: %s, %.1f MiB, built in %.0f s, sources digest %s" % (
        wheels[0], size / 2**20, now() - t0, sources_digest()))
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
    folder = check.out / "correctness"
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
        cmd = check.python("worker", "correctness", "--op", op, "--out", str(check.out), "--start", str(start))
        if check.dry_run:
            cmd.append("--dry-run")
        with open(stderr_path, "a") as err:
            proc = subprocess.Popen(cmd, env=check.env, cwd=str(check.out), stdout=err, stderr=subprocess.STDOUT)
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
    (check.out / "correctness").mkdir(exist_ok=True)
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
    (check.out / "correctness.txt").write_text("\n".join(lines) + "\n")
    write_json(check.out / "correctness.json", results)
    status = "FAIL" if counts.get("FAIL") else ("INCOMPLETE" if counts.get("NOT RUN") else "PASS")
    summary = ", ".join("%d %s" % (v, k) for k, v in sorted(counts.items()))
    return {"status": status, "summary": summary, "counts": counts, "files": ["correctness.txt", "correctness.json"],
            "failures": [ln for ln in lines if ln.startswith("FAIL")][:40]}


# --------------------------------------------------------------------------------------------------
# memcheck: compute-sanitizer over the sanitize worker

SANITIZER_ERROR = re.compile(r"^=+\s+(Invalid|Race|Uninitialized|Program hit|Leaked|Barrier error|Malformed|"
                             r"Out-of-range|Misaligned|Warp|Error|.*hazard)", re.I)
SANITIZER_AT = re.compile(r"^=+\s+at\s+(?:0x[0-9a-f]+ in\s+)?(.+)$", re.I)
SANITIZER_SUMMARY = re.compile(r"ERROR SUMMARY:\s*(\d+) error", re.I)


def kernel_name(frame):
    """The kernel's name from a sanitizer frame: 'void ns::name<float>(args)+0x1b0 in file.cu:42' -> 'name'."""
    frame = re.split(r"\+0x[0-9a-fA-F]+", frame.strip())[0]
    frame = re.sub(r"\(.*$", "", frame)
    frame = re.sub(r"<.*$", "", frame).strip()
    return frame.split()[-1].split("::")[-1] if frame else "(unnamed)"


def parse_sanitizer(text):
    """{"cases": {case: {"status", "errors": {kernel: n}}}, "total": the sanitizer's ERROR SUMMARY or None,
    "unattributed": errors outside any case}.  The worker prints @@CASE-BEGIN / @@CASE-END around each case
    and synchronises before the end marker, so the sanitizer's reports of a case fall between its markers.
    Each report counts once, under the kernel its first 'at ...' frame names ('(unnamed)' when none does)."""
    cases, current, pending, total, unattributed, expected = {}, None, None, None, {}, None
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
    return {"cases": cases, "total": total, "unattributed": unattributed, "expected": expected}


def phase_memcheck(check):
    limit = check.phase_limit("memcheck", later=("headline",))
    sanitizer = shutil.which("compute-sanitizer")
    if sanitizer is None:
        for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
            cand = Path(root or "/nonexistent") / "bin" / "compute-sanitizer"
            if cand.exists():
                sanitizer = str(cand)
    runs = {"memcheck": ("all",), "racecheck": ("cuda-shared",)}
    reports, lines, procs = {}, [], {}
    if check.dry_run or sanitizer is None:
        reason = "dry run" if check.dry_run else "compute-sanitizer not found"
        # The worker's own code still runs (without the sanitizer), so a broken case shows here first.
        cmd = check.python("worker", "sanitize", "--select", "all") + (["--dry-run"] if check.dry_run else [])
        out = subprocess.run(cmd, env=check.env, cwd=str(check.out), capture_output=True, text=True, timeout=limit)
        text = out.stdout + out.stderr
        (check.out / "memcheck-nosanitizer.log").write_text(text)
        parsed = parse_sanitizer(text)
        bad = [c for c, v in parsed["cases"].items() if v["status"] not in ("DONE", "SKIP")]
        lines.append("compute-sanitizer SKIPPED (%s); the sanitize worker ran %d cases without it, %d did not "
                     "finish: %s" % (reason, len(parsed["cases"]), len(bad), ", ".join(bad) or "none"))
        for c, v in parsed["cases"].items():
            lines.append("  %-48s %s" % (c, v["status"]))
        (check.out / "memcheck.txt").write_text("\n".join(lines) + "\n")
        return {"status": "SKIPPED" if not bad else "FAIL",
                "summary": "compute-sanitizer not run (%s); worker cases: %d, unfinished: %d"
                           % (reason, len(parsed["cases"]), len(bad)), "files": ["memcheck.txt"]}
    env = dict(check.env)
    # Without torch's caching allocator every tensor is its own cudaMalloc, so memcheck sees an access past a
    # tensor's end (inside a cached block it would land in memory the process owns and go unreported).
    env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
    for tool, select in runs.items():
        log_path = check.out / ("%s.log" % tool)
        cmd = [sanitizer, "--tool", tool, "--print-limit", "100", "--check-exit-code", "no"] + (
            ["--leak-check", "no"] if tool == "memcheck" else ["--racecheck-report", "hazard"])
        cmd += check.python("worker", "sanitize", "--select", select[0])
        f = open(log_path, "w")
        procs[tool] = (subprocess.Popen(cmd, env=env, cwd=str(check.out), stdout=f, stderr=subprocess.STDOUT),
                       f, log_path)
    deadline = now() + limit
    status = "PASS"
    for tool, (proc, f, log_path) in procs.items():
        try:
            rc = proc.wait(timeout=max(1.0, deadline - now()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout"
        f.close()
        parsed = parse_sanitizer(log_path.read_text(errors="replace"))
        reports[tool] = dict(parsed, exit=rc)
        n_err = sum(sum(v["errors"].values()) for v in parsed["cases"].values()) + sum(parsed["unattributed"].values())
        lines.append("%s: exit %s, ERROR SUMMARY %s, %d errors attributed to cases" % (tool, rc, parsed["total"], n_err))
        for c, v in parsed["cases"].items():
            errs = ", ".join("%s: %d" % kv for kv in sorted(v["errors"].items())) or "0 errors"
            lines.append("  %-48s %-8s %s" % (c, v["status"], errs))
            if v["errors"] or v["status"] not in ("DONE", "SKIP"):
                status = "FAIL"
        if parsed["unattributed"]:
            lines.append("  outside any case: %s" % parsed["unattributed"])
            status = "FAIL"
        ended = sum(1 for v in parsed["cases"].values() if v["status"] != "CRASHED")
        if parsed["expected"] is None or ended < parsed["expected"]:
            # the sanitized worker did not get through its cases: never a silent pass
            tail = " | ".join(log_path.read_text(errors="replace").splitlines()[-4:])[-400:]
            lines.append("  only %d of %s cases finished: %s" % (ended, parsed["expected"], tail))
            status = "FAIL" if rc != "timeout" else ("INCOMPLETE" if status == "PASS" else status)
        if rc == "timeout":
            status = "INCOMPLETE" if status == "PASS" else status
    (check.out / "memcheck.txt").write_text("\n".join(lines) + "\n")
    write_json(check.out / "memcheck.json", reports)
    summary = "; ".join(ln for ln in lines if not ln.startswith("  "))
    return {"status": status, "summary": summary, "files": ["memcheck.txt", "memcheck.json", "memcheck.log",
                                                             "racecheck.log"]}


# --------------------------------------------------------------------------------------------------
# headline and tests

def phase_headline(check):
    limit = check.phase_limit("headline")
    cmd = check.python("worker", "headline", "--out", str(check.out), "--seconds", "%.0f" % max(1.0, limit - 15))
    if check.dry_run:
        cmd.append("--dry-run")
    log_path = check.out / "headline.log"
    with open(log_path, "w") as f:
        try:
            rc = subprocess.run(cmd, env=check.env, cwd=str(check.out), stdout=f, stderr=subprocess.STDOUT,
                                timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    rows = read_jsonl(check.out / "headline.jsonl")
    state = {}
    if (check.out / "headline-state.json").exists():
        state = json.loads((check.out / "headline-state.json").read_text())
    measured = sum(1 for r in rows if r.get("kind") == "row")
    failed = [r for r in rows if r.get("kind") == "fail"]
    not_run = state.get("not_run", [])
    status = "FAIL" if failed or rc not in (0, "timeout") else ("INCOMPLETE" if not_run or rc == "timeout" else "PASS")
    return {"status": status, "summary": "%d rows measured, %d skipped, %d failed, %d not run (exit %s)" % (
        measured, sum(1 for r in rows if r.get("kind") == "skip"), len(failed), len(not_run), rc),
        "failures": [r["detail"] for r in failed][:20], "not_run": not_run[:50],
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
    with open(check.out / "tests.log", "w") as f:
        try:
            rc = subprocess.run([sys.executable, "-P", "-m", "pytest", str(TESTS_DIR), "-q", "-rfs",
                                 "-p", "no:cacheprovider"], env=env, cwd=str(REPO), stdout=f,
                                stderr=subprocess.STDOUT, timeout=left - 5).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    tail = (check.out / "tests.log").read_text(errors="replace").splitlines()
    last = next((ln for ln in reversed(tail) if re.search(r"\d+ (passed|failed)", ln)), "no pytest summary line")
    result = {"status": "PASS" if rc == 0 else ("INCOMPLETE" if rc == "timeout" else "FAIL"),
              "summary": "%s (exit %s, %.0f s)" % (last.strip("= "), rc, now() - t0), "files": ["tests.log"],
              "failures": [ln for ln in tail if ln.startswith("FAILED") or ln.startswith("ERROR")][:40]}
    left = check.left() - SUMMARY_RESERVE_S
    if rc == 0 and left > 40:
        with open(check.out / "tune.log", "w") as f:
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
    env = check.environment or {}
    data = {"tool": "benchmarks/tools/gpu_check.sh", "dry_run": check.dry_run, "environment": env,
            "elapsed_s": round(now() - check.start, 1), "budgets_s": BUDGETS, "total_s": TOTAL_S,
            "phases": check.phases}
    write_json(check.out / "gpu_check.json", data)
    md = ["# GPU check%s" % (" (DRY RUN on a CPU: tiny shapes, no GPU; not a measurement)" if check.dry_run else ""),
          "",
          "- device: %s (%s, %s SMs, %s GiB), driver %s" % (env.get("device"), env.get("compute_capability"),
                                                         env.get("sm_count"), env.get("gpu_memory_gib"),
                                                         env.get("driver")),
          "- python %s, torch %s (CUDA %s, cuDNN %s), triton %s" % (env.get("python"), env.get("torch"),
                                                                  env.get("cuda"), env.get("cudnn"), env.get("triton")),
          "- alexnet_kernels %s, build %s" % (env.get("alexnet_kernels"), env.get("alexnet_kernels_build")),
          "- commit %s, started %s, %.0f s so far" % (env.get("commit"), env.get("started"), now() - check.start),
          "", "| phase | status | seconds | summary |", "|---|---|---|---|"]
    for name in ("build", "correctness", "memcheck", "headline", "tests"):
        p = check.phases.get(name)
        if p is None:
            md.append("| %s | not reached | | |" % name)
        else:
            md.append("| %s | %s | %s | %s |" % (name, p["status"], p.get("seconds", ""),
                                                  str(p.get("summary", "")).replace("|", "/")))
    for name in ("correctness", "headline", "tests"):
        fails = (check.phases.get(name) or {}).get("failures")
        if fails:
            md += ["", "## %s failures" % name, ""] + ["- " + str(f).replace("\n", " ")[:500] for f in fails]
    headline_md = check.out / "headline" / "summary.md"
    if headline_md.exists():
        md += ["", "## Headline benchmark", "", headline_md.read_text()]
    (check.out / "gpu_check.md").write_text("\n".join(md) + "\n")


def main_run(args):
    check = Check(args.out, args.dry_run, args.total_s)
    log("results in %s%s" % (check.out, " (dry run)" if args.dry_run else ""))
    check.environment = {"commit": git_commit(), "dry_run": check.dry_run}
    check.write_summary()
    if args.dry_run or args.skip_build:
        check.skip_phase("build", "dry run: the extension is built by the caller (.ci/run builds it before the "
                         "dry run)" if args.dry_run else "--skip-build")
    else:
        check.run_phase("build", lambda: phase_build(check))
    check.environment = probe_environment(check)
    check.write_summary()
    check.run_phase("correctness", lambda: phase_correctness(check))
    check.run_phase("memcheck", lambda: phase_memcheck(check))
    check.run_phase("headline", lambda: phase_headline(check))
    if args.dry_run:
        check.skip_phase("tests", "dry run: CI runs pytest tests in its own step")
    else:
        result = phase_tests(check)
        if result is not None:
            check.phases["tests"] = result
            check.write_summary()
    log("done in %.0f s: %s" % (now() - check.start, ", ".join(
        "%s %s" % (k, v["status"]) for k, v in check.phases.items())))
    print((check.out / "gpu_check.md").read_text())
    bad = [k for k, v in check.phases.items() if v["status"] in ("FAIL", "ERROR")]
    return 1 if bad else 0


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
    run.add_argument("--total-s", type=float, default=TOTAL_S)
    sub.add_parser("wheel", help="on a CPU: build the sm_90 wheel the build phase installs (.whl/)")
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
    return main_worker(args)


if __name__ == "__main__":
    sys.exit(main())
