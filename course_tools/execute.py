"""Run notebooks headless and measure them: ``python -m course_tools.execute NOTEBOOK...``.

Each notebook runs top to bottom in a fresh kernel (cwd = its folder), with outputs kept in
memory only (nothing is written back unless ``--save-to`` is given). The kernel's peak
resident memory (including any processes it starts) is sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from course_tools import notebooks


@dataclass
class RunResult:
    notebook: str
    ok: bool
    seconds: float
    peak_rss_mb: float
    error: str = ""


class _PeakMemory:
    """Samples the RSS of a process tree in a background thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                proc = psutil.Process(self.pid)
                rss = proc.memory_info().rss + sum(
                    c.memory_info().rss for c in proc.children(recursive=True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_notebook(path: Path, timeout: int = 900, save_to: Path | None = None) -> RunResult:
    """Execute one notebook; never raises for a failing cell (see ``RunResult.error``)."""
    path = Path(path).resolve()
    nb = notebooks.read_notebook(path)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.monotonic()
    error, peak = "", 0
    with client.setup_kernel():
        pid = client.km.provisioner.process.pid if client.km.provisioner else None
        sampler = _PeakMemory(pid) if pid else None
        if sampler:
            sampler.__enter__()
        try:
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
        except CellExecutionError as exc:
            error = str(exc).splitlines()[-1] if str(exc) else "cell failed"
            error = f"cell {index}: {error}\n{_short(exc)}"
        finally:
            if sampler:
                sampler.__exit__()
                peak = sampler.peak
    if save_to:
        nbformat.write(nb, str(save_to))
    return RunResult(str(path), not error, round(time.monotonic() - started, 1),
                     round(peak / 2**20, 1), error)


def _short(exc: Exception, limit: int = 3000) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[-limit:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_tools.execute", description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="per cell, seconds")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--save-to", type=Path, help="folder to write executed copies into")
    args = parser.parse_args(argv)
    results = []
    for path in args.notebooks:
        save = (args.save_to / path.name) if args.save_to else None
        if args.save_to:
            args.save_to.mkdir(parents=True, exist_ok=True)
        result = run_notebook(path, args.timeout, save)
        results.append(result)
        if not args.json:
            status = "ok" if result.ok else "FAILED"
            print(f"{status:6} {result.seconds:7.1f} s  peak {result.peak_rss_mb:7.1f} MB  "
                  f"{path}", flush=True)
            if result.error:
                print(result.error)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
