"""How many learners fit on a node: N learners' kernels running one chapter at the same time.

``python -m utils.hub_sizing --learners 3 [--chapter 01_residual_stream] [--json]``

Each learner is its own ``python -m utils.execute`` process (a fresh kernel that runs the
chapter's solution notebook top to bottom, as a learner who runs every cell would), all started
together. Per learner it reports the wall time, the CPU seconds of the learner's whole process
tree (kernel included: the rusage of the reaped tree) and the kernel's peak resident memory,
and the machine's load average before and after, since a shared machine inflates times.
``docs/INSTRUCTORS.md`` ("Sizing") turns these into learners per node.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from utils import paths


@dataclass
class LearnerRun:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    ok: bool


def run_one_learner(notebook: str, env: dict[str, str], started: float) -> LearnerRun:
    """One learner's kernel on ``notebook``, measured from ``started`` until it is done."""
    process = subprocess.Popen([sys.executable, "-m", "utils.execute", "--json", notebook],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                               text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # rusage of the whole reaped process tree
    process.returncode = os.waitstatus_to_exitcode(status)
    result = json.loads(output)[0] if output.strip() else {"peak_rss_mb": 0.0, "ok": False}
    return LearnerRun(round(time.monotonic() - started, 1),
                      round(usage.ru_utime + usage.ru_stime, 1), result["peak_rss_mb"],
                      bool(result["ok"]) and process.returncode == 0)


def run_learners(notebook: str, learners: int, threads: int = 1) -> list[LearnerRun]:
    """Start ``learners`` kernels on ``notebook`` at once; wait for all of them."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.monotonic()
    with ThreadPoolExecutor(learners) as pool:
        return list(pool.map(lambda _: run_one_learner(notebook, env, started),
                             range(learners)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.hub_sizing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", type=int, default=2)
    parser.add_argument("--chapter", default="01_residual_stream")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per kernel")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
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
