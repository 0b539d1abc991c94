"""course_tools.hub_sizing counts the CPU of a command's whole process tree, grandchildren included,
with a cgroup (root) or from the reaped tree's rusage (anyone)."""

import sys
from pathlib import Path

import pytest

from course_tools import hub_sizing

BUSY_GRANDCHILD = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
                   "'import time\\nend = time.process_time() + 0.6\\n"
                   "while time.process_time() < end: pass'])")


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup-if-allowed", "rusage"])
def test_cpu_of_a_grandchild_is_counted(cgroups, monkeypatch):
    if not cgroups:
        monkeypatch.setattr(hub_sizing, "CPUACCT", Path("/nonexistent/cpuacct"))
    wall, cpu, status, method = hub_sizing.measured_command(
        [sys.executable, "-c", BUSY_GRANDCHILD])
    assert status == 0
    assert cpu >= 0.6, (cpu, method)
    assert wall >= 0.6
    if not cgroups:
        assert method == "rusage"
