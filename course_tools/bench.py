"""Performance figures for the README: ``python -m course_tools.bench``.

Measures, on this machine: setting up a fresh environment (``--setup``, slow), SmolLM2's
first load (dequantise + process + cache, in a throwaway cache) and cached load, executing
every solution notebook (time and the kernel's peak memory), grading every solution
notebook with the hidden checks (twice: computing the investigations' truths, then reading
them back as a class's later gradings do), grading a class of ``--class-size`` submissions of one
chapter in parallel, as an instructor would (``course_tools.grade_class``), and (``--tests``) the
test suite: ``make quicktest`` and ``make test``. Each figure is printed next to its budget
(:data:`BUDGETS`). These are benchmarks, not tests: nothing fails when a budget is missed, it
is reported.

Times depend on the machine, so each is also printed as a multiple of a fixed reference
workload timed in the same run (:func:`bench_reference`: plain forward passes of SmolLM2
over a fixed batch). Two machines' figures compare through those ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from course_tools import notebooks
from course_tools.execute import _PeakMemory, run_notebook
from utils import paths

# Budgets on 2 CPU cores, in seconds (memory in MB).
BUDGETS = {
    "smollm2_cached_load": 3,
    "chapter": 180,
    "chapter_peak_mb": 1536,
    "course": 480,
    "hidden_checks": 60,
    "class_grading": 300,
    "quicktest": 180,
    "test": 900,
}

# The reference workload: SmolLM2 forward passes over this fixed batch (token ids), median of
# REFERENCE_REPEATS timed passes after one untimed one, in a fresh process, torch's default
# threads. Changing any of these changes every ratio: keep them fixed.
REFERENCE_BATCH = (2, 64)
REFERENCE_REPEATS = 5
REFERENCE_CODE = f"""
import statistics, time, torch
from utils.smollm2 import load_smollm2
model = load_smollm2(verbose=False)
tokens = (torch.arange({REFERENCE_BATCH[0] * REFERENCE_BATCH[1]}) * 7919 % 40000 + 100
          ).reshape({REFERENCE_BATCH})
times = []
with torch.no_grad():
    model(tokens)
    for _ in range({REFERENCE_REPEATS}):
        started = time.perf_counter()
        model(tokens)
        times.append(time.perf_counter() - started)
print(statistics.median(times))
"""


def _timed_process(command: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(seconds, peak RSS MB of the process tree, exit code) of a command."""
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=paths.REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with _PeakMemory(process.pid) as sampler:
        code = process.wait()
    return time.monotonic() - started, sampler.peak / 2**20, code


def bench_setup() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        started = time.monotonic()
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin/pip"), "install", "-q", "-r", "requirements.txt"],
                 [str(venv / "bin/pip"), "install", "-q", "--no-deps", "-r",
                  "requirements-nodeps.txt"],
                 [str(venv / "bin/pip"), "install", "-q", "--no-deps", "-e", "."]]
        for step in steps:
            subprocess.run(step, cwd=paths.REPO_ROOT, check=True, capture_output=True)
        return {"setup_seconds": round(time.monotonic() - started, 1)}


def bench_smollm2(cold: bool) -> dict:
    out = {}
    if cold:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "COURSE_CACHE_DIR": cache}
            seconds, peak, code = _timed_process(
                [sys.executable, "-m", "utils.smollm2", "--prepare", "--quiet"], env)
            out.update(smollm2_cold_seconds=round(seconds, 1), smollm2_cold_peak_mb=round(peak),
                       smollm2_cold_ok=code == 0)
    subprocess.run([sys.executable, "-m", "utils.smollm2", "--prepare", "--quiet"],
                   cwd=paths.REPO_ROOT, check=True, capture_output=True)
    # A notebook has imported torch, transformers and TransformerLens in its setup cell before
    # it loads the model: time the load after those imports, and the whole fresh process.
    code = ("import time; t0 = time.monotonic(); import torch, transformers, "
            "transformer_lens.model_bridge; t1 = time.monotonic(); "
            "from utils.smollm2 import load_smollm2; load_smollm2(verbose=False); "
            "print(t1 - t0, time.monotonic() - t1)")
    done = subprocess.run([sys.executable, "-c", code], cwd=paths.REPO_ROOT, check=True,
                          capture_output=True, text=True)
    imports, load = (float(x) for x in done.stdout.split()[-2:])
    seconds, peak, _ = _timed_process([sys.executable, "-c", code])
    out.update(smollm2_cached_load_seconds=round(load, 2),
               smollm2_import_seconds=round(imports, 2),
               smollm2_cached_process_seconds=round(seconds, 1),
               smollm2_cached_peak_mb=round(peak))
    return out


def bench_reference() -> dict:
    """Seconds of one plain SmolLM2 forward pass over the fixed reference batch."""
    done = subprocess.run([sys.executable, "-c", REFERENCE_CODE], cwd=paths.REPO_ROOT,
                          check=True, capture_output=True, text=True)
    seconds = float(done.stdout.split()[-1])
    print(f"  reference workload (SmolLM2 forward, batch {REFERENCE_BATCH}): {seconds:.3f} s",
          flush=True)
    return {"reference_seconds": round(seconds, 4)}


def bench_test_suite() -> dict:
    """Wall time of ``make quicktest`` and ``make test`` (each must pass)."""
    out = {}
    for target in ("quicktest", "test"):
        seconds, _, code = _timed_process(["make", target])
        out[f"{target}_seconds"], out[f"{target}_ok"] = round(seconds, 1), code == 0
        print(f"  make {target}: {seconds:.0f} s{'' if code == 0 else '  FAILED'}", flush=True)
    return out


def bench_notebooks(selected: list[Path]) -> dict:
    rows = []
    for path in selected:
        result = run_notebook(path)
        rows.append({"notebook": path.name, "ok": result.ok, "seconds": result.seconds,
                     "peak_mb": result.peak_rss_mb, "error": result.error[:300]})
        print(f"  executed {path.name}: {result.seconds} s, peak {result.peak_rss_mb} MB"
              f"{'' if result.ok else '  FAILED'}", flush=True)
    return {"notebooks": rows, "course_seconds": round(sum(r["seconds"] for r in rows), 1)}


def _grade_solutions(selected: list[Path], label: str) -> list[dict]:
    from course_tools.grading.runner import grade_notebook

    rows = []
    for path in selected:
        started = time.monotonic()
        report = grade_notebook(path, path.stem)
        rows.append({"chapter": path.stem, "seconds": round(time.monotonic() - started, 1),
                     "checks_seconds": report.seconds,
                     "score": report.score, "max_score": report.max_score})
        print(f"  graded {path.name} ({label}): {report.score:g}/{report.max_score:g}, checks "
              f"{report.seconds} s, {rows[-1]['seconds']} s with the worker's start-up",
              flush=True)
    return rows


def bench_hidden_checks(selected: list[Path]) -> dict:
    """Grade every solution twice: first on a machine that has no kept truths (an empty
    truths folder: every investigation's truth is computed), then as every later grading
    of a class is (the truths read back)."""
    from course_tools.grading import truth_cache

    with tempfile.TemporaryDirectory() as truths, \
            mock.patch.dict(os.environ, {truth_cache.DIR_ENV: truths}):
        first = _grade_solutions(selected, "truths computed")
        rows = _grade_solutions(selected, "truths kept")
    # The budget is for the checks; starting a chapter's worker (imports, SmolLM2, the setup
    # cell) is paid once per grading run, whatever the number of notebooks graded with it.
    return {"grading": rows, "first_grading": first,
            "first_hidden_checks_seconds": round(sum(r["checks_seconds"] for r in first), 1),
            "hidden_checks_seconds": round(sum(r["checks_seconds"] for r in rows), 1),
            "grading_with_startup_seconds": round(sum(r["seconds"] for r in rows), 1)}


def bench_class_grading(chapter: str, size: int, jobs: int = 2) -> dict:
    """Grade a class of ``size`` copies of one chapter's solution with ``jobs`` workers."""
    from course_tools.grade_class import grade_class

    solution = paths.SOLUTIONS_DIR / f"{chapter}.ipynb"
    with tempfile.TemporaryDirectory() as inbox:
        for i in range(size):
            (Path(inbox) / f"learner{i:02d}.ipynb").write_bytes(solution.read_bytes())
        started = time.monotonic()
        reports = grade_class(Path(inbox), chapter, jobs=jobs)
        seconds = round(time.monotonic() - started, 1)
    full = sum(r.score == r.max_score for r in reports.values())
    print(f"  graded a class of {size} ({chapter}) in {seconds} s, {full} full marks", flush=True)
    return {"class_grading": {"chapter": chapter, "size": size, "jobs": jobs,
                              "seconds": seconds, "full_marks": full}}


def markdown(results: dict) -> str:
    lines = ["| figure | measured | budget |", "|---|---|---|"]
    reference = results.get("reference_seconds")

    def row(name: str, value, budget: str = "") -> None:
        lines.append(f"| {name} | {value} | {budget} |")

    def timed(seconds: float) -> str:
        """Seconds, and as a multiple of the reference workload when it was measured."""
        return f"{seconds} s" + (f" ({seconds / reference:,.0f} × ref)" if reference else "")

    if reference:
        row(f"reference workload: one SmolLM2 forward pass, batch {REFERENCE_BATCH} "
            f"(median of {REFERENCE_REPEATS})", f"{reference} s = 1 ref")
    if "setup_seconds" in results:
        row("set up a fresh environment (pip, warm cache)", f"{results['setup_seconds']} s")
    if "smollm2_cold_seconds" in results:
        row("SmolLM2 first load (dequantise + cache, once)",
            f"{results['smollm2_cold_seconds']} s, peak {results['smollm2_cold_peak_mb']} MB",
            "paid at setup, not in a notebook")
    if "smollm2_cached_load_seconds" in results:
        row("SmolLM2 load from cache (after the setup cell's imports)",
            f"{results['smollm2_cached_load_seconds']} s (+ {results['smollm2_import_seconds']} s "
            f"importing torch, transformers, TL; peak {results['smollm2_cached_peak_mb']} MB)",
            f"≤ {BUDGETS['smollm2_cached_load']} s")
    for nb in results.get("notebooks", []):
        status = "" if nb["ok"] else " **FAILED**"
        row(f"execute `{nb['notebook']}`",
            f"{timed(nb['seconds'])}, peak {nb['peak_mb']} MB{status}",
            f"≤ {BUDGETS['chapter']} s, ≤ {BUDGETS['chapter_peak_mb']:,} MB")
    if "course_seconds" in results:
        row("whole course, end to end", timed(results["course_seconds"]),
            f"≤ {BUDGETS['course']} s")
    if "hidden_checks_seconds" in results:
        row("hidden checks of every exercise (grading all solutions, workers started, "
            "investigations' truths kept from an earlier grading)",
            f"{timed(results['hidden_checks_seconds'])}; "
            f"{timed(results['grading_with_startup_seconds'])} with each chapter's worker "
            "start-up", f"≤ {BUDGETS['hidden_checks']} s")
        row("the same, the first time on a machine (every truth computed and kept)",
            timed(results["first_hidden_checks_seconds"]), "once per machine")
    if "class_grading" in results:
        c = results["class_grading"]
        row(f"grade a class of {c['size']} (`{c['chapter']}`, {c['jobs']} jobs)",
            f"{timed(c['seconds'])} ({c['full_marks']}/{c['size']} full marks)",
            f"≤ {BUDGETS['class_grading']} s")
    for target in ("quicktest", "test"):
        if f"{target}_seconds" in results:
            status = "" if results[f"{target}_ok"] else " **FAILED**"
            row(f"`make {target}`", timed(results[f"{target}_seconds"]) + status,
                f"≤ {BUDGETS[target]} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_tools.bench", description=__doc__)
    parser.add_argument("--setup", action="store_true", help="also time a fresh pip install")
    parser.add_argument("--no-cold", action="store_true", help="skip SmolLM2's first load")
    parser.add_argument("--chapters", nargs="*", help="only these (e.g. 01_residual_stream)")
    parser.add_argument("--class-size", type=int, default=30,
                        help="grade this many copies of one solution in parallel (0: skip)")
    parser.add_argument("--class-chapter", default="05_activation_patching",
                        help="the chapter whose class is graded (default: the slowest to grade)")
    parser.add_argument("--tests", action="store_true",
                        help="also time `make quicktest` and `make test` (about 20 minutes)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    selected = notebooks.chapter_notebooks(paths.SOLUTIONS_DIR)
    if args.chapters:
        selected = [p for p in selected if p.stem in args.chapters]
    results: dict = {"cpus": os.cpu_count()}
    if args.setup:
        results.update(bench_setup())
    results.update(bench_smollm2(cold=not args.no_cold))
    results.update(bench_reference())
    results.update(bench_notebooks(selected))
    results.update(bench_hidden_checks(selected))
    if args.class_size:
        results.update(bench_class_grading(args.class_chapter, args.class_size))
    if args.tests:
        results.update(bench_test_suite())
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
