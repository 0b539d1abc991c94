"""How many learners fit on a node: N learners' kernels running one chapter at the same time.

``python -m course_tools.hub_sizing --learners 3 [--chapter 01_residual_stream] [--json]``
``python -m course_tools.hub_sizing --grade 6 [--chapter 02_qk_ov_circuits] [--jobs 1]``

Each learner is its own ``python -m course_tools.execute`` process (a fresh kernel that runs the
chapter's solution notebook top to bottom, as a learner who runs every cell would), all started
together. Per learner it reports the wall time, the CPU seconds of the learner's whole process
tree (kernel included; see :class:`CpuAccount`) and the kernel's peak resident memory,
and the machine's load average before and after, since a shared machine inflates times.
``--grade N`` instead grades N copies of the chapter's solution with ``course_tools.grade_class``
(sandboxed, ``--jobs`` workers) and reports the wall time and CPU seconds per submission.
``docs/INSTRUCTORS.md`` ("Sizing") turns these into learners per node.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from utils import paths


@dataclass
class LearnerRun:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    ok: bool


CPUACCT = Path("/sys/fs/cgroup/cpuacct")  # cgroup v1 CPU accounting, when we may write it


class CpuAccount:
    """CPU seconds of a command and every process it starts, sandboxed ones included: a
    cgroup of its own when the machine lets us make one (root, cgroup v1 ``cpuacct``), else
    the rusage of the reaped process tree (which misses processes that are not reaped by
    their parents, as in the grader's sandbox)."""

    def __init__(self) -> None:
        self.group: Path | None = None
        if os.access(CPUACCT, os.W_OK):
            self.group = CPUACCT / f"hub-sizing-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.group.mkdir()
        self.method = "cgroup" if self.group else "rusage"

    def join(self) -> None:
        """Runs in the child before exec: its whole tree is counted."""
        if self.group:
            (self.group / "cgroup.procs").write_text(str(os.getpid()))

    def seconds(self, usage) -> float:
        if self.group:
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        return usage.ru_utime + usage.ru_stime

    def close(self) -> None:
        if self.group:
            try:
                self.group.rmdir()
            except OSError:  # a process of the command outlived it: leave the empty group
                pass


def measured_command(command: list[str], env: dict[str, str] | None = None,
                     stdout=subprocess.DEVNULL) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds of the whole process tree, exit status, how CPU was counted)
    of ``command``."""
    account = CpuAccount()
    try:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=stdout, env=env, preexec_fn=account.join)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        return (round(time.monotonic() - started, 1), round(account.seconds(usage), 1),
                process.returncode, account.method)
    finally:
        account.close()


def run_one_learner(notebook: str, env: dict[str, str], report: Path) -> LearnerRun:
    """One learner's kernel on ``notebook`` (course_tools.execute), measured."""
    with open(report, "w") as output:
        wall, cpu, status, _ = measured_command(
            [sys.executable, "-m", "course_tools.execute", "--json", notebook], env, output)
    text = report.read_text()
    result = json.loads(text)[0] if text.strip() else {"peak_rss_mb": 0.0, "ok": False}
    return LearnerRun(wall, cpu, result["peak_rss_mb"], bool(result["ok"]) and status == 0)


def run_learners(notebook: str, learners: int, threads: int = 1) -> list[LearnerRun]:
    """Start ``learners`` kernels on ``notebook`` at once; wait for all of them."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="sizing-") as folder, \
            ThreadPoolExecutor(learners) as pool:
        return list(pool.map(lambda n: run_one_learner(notebook, env, Path(folder) / f"{n}.json"),
                             range(learners)))


def grading_throughput(chapter: str, submissions: int, jobs: int) -> dict:
    """Grade ``submissions`` copies of the chapter's solution (a class of full marks)."""
    with tempfile.TemporaryDirectory(prefix="sizing-class-") as inbox:
        for number in range(submissions):
            shutil.copy(paths.SOLUTIONS_DIR / f"{chapter}.ipynb",
                        Path(inbox) / f"learner{number}.ipynb")
        wall, cpu, status, method = measured_command(
            [sys.executable, "-m", "course_tools.grade_class", inbox, "--chapter", chapter,
             "--jobs", str(jobs)])
    return {"submissions": submissions, "jobs": jobs, "wall_s": wall, "cpu_s": cpu,
            "cpu_s_per_submission": round(cpu / submissions, 1), "cpu_counted_by": method,
            "ok": status == 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_tools.hub_sizing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", type=int, default=2)
    parser.add_argument("--chapter", default="01_residual_stream")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per kernel")
    parser.add_argument("--grade", type=int, default=0, metavar="N",
                        help="instead: grade N copies of the solution, report CPU per submission")
    parser.add_argument("--jobs", type=int, default=1, help="grading workers (with --grade)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.grade:
        load_before = os.getloadavg()
        result = grading_throughput(args.chapter, args.grade, args.jobs)
        result.update(chapter=args.chapter, cores=os.cpu_count(),
                      load_before=[round(x, 2) for x in load_before],
                      load_after=[round(x, 2) for x in os.getloadavg()])
        print(json.dumps(result, indent=2))
        return 0 if result["ok"] else 1
    notebook = str(paths.SOLUTIONS_DIR / f"{args.chapter}.ipynb")
    load_before = os.getloadavg()
    runs = run_learners(notebook, args.learners, args.threads)
    summary = {"chapter": args.chapter, "learners": args.learners, "threads": args.threads,
               "cores": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()],
               "runs": [asdict(r) for r in runs]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.learners} learner(s) running {args.chapter} at once on "
              f"{summary['cores']} cores, {args.threads} torch thread(s) each; load average "
              f"{summary['load_before'][0]} before, {summary['load_after'][0]} after")
        for number, run in enumerate(runs, 1):
            print(f"  learner {number}: {'ok' if run.ok else 'FAILED':6} wall {run.wall_s:6.1f} s"
                  f"  cpu {run.cpu_s:6.1f} s  peak {run.peak_rss_mb:7.1f} MB")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
