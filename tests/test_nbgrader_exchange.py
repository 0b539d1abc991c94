"""The multi-user path (JupyterHub + nbgrader's exchange), rehearsed on one machine.

Two learners, each with their own home folder and nbgrader config, fetch the released
fixture chapter from the exchange, answer it (one correctly, one not at all) and submit; the
instructor collects and autogrades with the sandboxed checks. Here one account plays every
part and the learners pass ``--student``; ``tests/test_jupyterhub.py`` runs the same path on
a real JupyterHub with a Unix account per person (nbgrader takes the id from the account).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from course_tools import nbgrader_course, notebooks
from course_tools.grading.sandbox import bubblewrap_path
from tests.course_layout import FIXTURE

pytestmark = pytest.mark.skipif(bubblewrap_path() is None, reason="needs bubblewrap")

LEARNER_CONFIG = """c = get_config()  # noqa: F821
c.Exchange.root = {exchange!r}
c.CourseDirectory.course_id = "mech-interp-course"
"""
ANSWER = {"center_rows": "def center_rows(x):\n    return x - x.mean(-1, keepdim=True)\n",
          "mask_future": "import torch as t\ndef mask_future(s):\n"
                         "    return s.masked_fill(t.ones(s.shape[-2:]).triu(1).bool(), "
                         "-float('inf'))\n"}


def learner(home, *args):
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=home,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_release_fetch_submit_collect_autograde(tmp_path):
    from nbgrader.api import Gradebook

    exchange = tmp_path / "exchange"
    root = nbgrader_course.init_course(tmp_path / "course", exchange,
                                       checks_dir=str(FIXTURE.checks))
    nbgrader_course.release(root, FIXTURE.name, FIXTURE.solutions)
    nbgrader_course.release_to_exchange(root, FIXTURE.name)
    for student, answers in (("alice", ANSWER), ("bob", {})):
        home = tmp_path / student
        home.mkdir()
        (home / "nbgrader_config.py").write_text(LEARNER_CONFIG.format(exchange=str(exchange)))
        listed = learner(home, "list")
        assert FIXTURE.name in listed.stdout + listed.stderr
        learner(home, "fetch_assignment", FIXTURE.name)
        path = home / FIXTURE.name / f"{FIXTURE.name}.ipynb"
        nb = notebooks.read_notebook(path)
        for cell in nb.cells:
            gid = notebooks.nbgrader_meta(cell).get("grade_id")
            if notebooks.is_answer_cell(cell) and gid in answers:
                cell.source = answers[gid]
        notebooks.write_notebook(nb, path)
        learner(home, "submit", FIXTURE.name, "--student", student)
    nbgrader_course.collect_from_exchange(root, FIXTURE.name)
    for student in ("alice", "bob"):
        assert (root / "submitted" / student / FIXTURE.name / f"{FIXTURE.name}.ipynb").is_file()
        nbgrader_course.nbgrader(root, "db", "student", "add", student)
    nbgrader_course.autograde(root, FIXTURE.name)
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        scores = {s: gradebook.find_submission(FIXTURE.name, s).score for s in ("alice", "bob")}
    assert scores == {"alice": 3.0, "bob": 0.0}
