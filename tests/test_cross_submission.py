"""One class, one grading run: no submission can see, or change the grade of, another.

Attackers are graded before honest students and an accomplice (a stub that would profit from
a replayed or forged result) after them, by one worker (``--jobs 1``), so every attack has a
later victim. Each attack answer returns the *right* value only if its attack worked, so a
successful attack shows up as an unearned point. Every student's exact score is asserted,
in a ``grade_class`` run, in an nbgrader autograde run, on a real chapter, and (as root) with
the grader started by an ordinary user.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from course_tools import grade_class, notebooks
from course_tools.grading.sandbox import bubblewrap_path
from tests.course_layout import FIXTURE, course_chapters
from utils import paths

pytestmark = pytest.mark.skipif(bubblewrap_path() is None, reason="needs bubblewrap")

RIGHT = "x - x.mean(dim=-1, keepdim=True)"
WRONG = "x * 0"
HONEST_CENTER = (  # prints, uses a little /tmp, sets threads, imports a fresh module
    "import fractions, tempfile, torch as t\n"
    "t.set_num_threads(2)\n"
    "def center_rows(x):\n"
    "    print('centring', tuple(x.shape))\n"
    "    with tempfile.NamedTemporaryFile('w') as f:\n"
    "        f.write('HONEST-SECRET-7131 ' * 100)\n"
    "    assert fractions.Fraction(1, 2) == 0.5\n"
    f"    return {RIGHT}\n")
GOOD_MASK = ("import torch as t\ndef mask_future(s):\n"
             "    future = t.ones(s.shape[-2:], dtype=t.bool).triu(1)\n"
             "    return s.masked_fill(future, -float('inf'))\n")

# Each attack sets `worked = True` if it reached something it must not; the answer is right
# only then. They run inside center_rows, i.e. in the graded call.
ATTACKS = {
    "reopen_worker_pipes": """
import glob, json, os, struct
def center_rows(x):
    worked = False
    hello = json.dumps({"op": "hello", "setup_source": "import os"}).encode()
    frame = struct.pack("<IQ", len(hello), 0) + hello
    mine = f"/proc/{os.getpid()}/"
    for fd in glob.glob(f"/proc/{os.getppid()}/fd/*") + glob.glob("/proc/[0-9]*/fd/*"):
        if fd.startswith(mine):
            continue
        try:
            with open(fd, "wb", buffering=0) as f:
                f.write(b"M" + frame)
                worked = True
        except OSError:
            pass
    return %s if worked else %s
""",
    "forge_replies": """
import glob, json, os, struct
def center_rows(x):
    worked = False
    reply = json.dumps({"id": "x", "status": "ok", "result": 1.0}).encode()
    frame = struct.pack("<IQ", len(reply), 0) + reply
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) not in (os.getpid(),):
            for fd in glob.glob(f"/proc/{pid}/fd/*"):
                try:
                    os.write(os.open(fd, os.O_WRONLY | os.O_NONBLOCK), frame * 50)
                    worked = True
                except OSError:
                    pass
    return %s if worked else %s
""",
    "trace_the_worker": """
import ctypes, os
def center_rows(x):
    libc = ctypes.CDLL(None, use_errno=True)
    worked = libc.ptrace(16, os.getppid(), 0, 0) == 0  # PTRACE_ATTACH
    return %s if worked else %s
""",
    "write_worker_memory": """
import os
def center_rows(x):
    try:
        open(f"/proc/{os.getppid()}/mem", "r+b").close()
        worked = True
    except OSError:
        worked = False
    return %s if worked else %s
""",
    "nested_user_namespace": """
import ctypes, os
def center_rows(x):
    libc = ctypes.CDLL(None, use_errno=True)
    worked = libc.unshare(0x10000000) == 0  # CLONE_NEWUSER
    return %s if worked else %s
""",
    "more_processes_than_allowed": """
import os, time
def center_rows(x):
    children = 0
    for _ in range(400):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(20)
            os._exit(0)
        children += 1
    worked = children >= 300
    return %s if worked else %s
""",
    "plant_modules_and_fill_tmp": """
import os, sys, tempfile
def center_rows(x):
    for folder in {os.getcwd(), tempfile.gettempdir(), "/tmp", os.path.expanduser("~")}:
        for name in ("fractions.py", "sitecustomize.py", "tempfile.py"):
            try:
                with open(os.path.join(folder, name), "w") as f:
                    f.write("raise SystemExit('planted')\\n")
            except OSError:
                pass
        try:
            for i in range(200):
                with open(os.path.join(folder, f"fill{i}"), "wb") as f:
                    f.write(b"0" * (8 << 20))
        except OSError:
            pass
    return %s
""",
    "leave_a_daemon": """
import os, signal, time
def center_rows(x):
    if os.fork() == 0:
        os.setsid()
        for _ in range(300):  # outlive the call and disturb whatever runs next
            for pid in os.listdir("/proc"):
                if pid.isdigit() and int(pid) != os.getpid():
                    try:
                        os.kill(int(pid), signal.SIGSTOP)
                    except OSError:
                        pass
            time.sleep(0.1)
        os._exit(0)
    return %s
""",
    "scrape_earlier_students": """
import os, re
def center_rows(x):
    worked = False
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            start, end = (int(a, 16) for a in line.split()[0].split("-"))
            if "r" not in line.split()[1] or end - start > 1 << 30:
                continue
            try:
                mem.seek(start)
                if b"HONEST-SECRET-7131" in mem.read(end - start):
                    worked = True
                    break
            except (OSError, ValueError, OverflowError):
                pass
    return %s if worked else %s
""",
    "kill_the_worker": """
import os, signal
def center_rows(x):
    os.kill(os.getppid(), signal.SIGKILL)
    return %s
""",
}


def _attack(name: str) -> str:
    code = ATTACKS[name]
    return code % ((RIGHT, WRONG) if code.count("%s") == 2 else (WRONG,))


def _write(folder, student, answers):
    folder.mkdir(parents=True, exist_ok=True)
    nb = notebooks.read_notebook(FIXTURE.student_notebook)
    for cell in nb.cells:
        grade_id = notebooks.nbgrader_meta(cell).get("grade_id")
        if notebooks.is_answer_cell(cell) and grade_id in answers:
            cell.source = answers[grade_id]
    notebooks.write_notebook(nb, folder / f"{student}.ipynb")


def _class(folder, attacks) -> dict[str, float]:
    """Students in grading order (ids sort that way) and the scores they must get."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    _write(folder, "a00_honest_first", {"center_rows": HONEST_CENTER, "mask_future": GOOD_MASK})
    expected["a00_honest_first"] = 3.0
    for i, attack in enumerate(attacks):
        _write(folder, f"b{i:02d}_{attack}", {"center_rows": _attack(attack),
                                             "mask_future": GOOD_MASK})
        expected[f"b{i:02d}_{attack}"] = 2.0
        _write(folder, f"b{i:02d}z_honest", {"center_rows": HONEST_CENTER,
                                             "mask_future": GOOD_MASK})
        expected[f"b{i:02d}z_honest"] = 3.0
    _write(folder, "c_accomplice", {})
    expected["c_accomplice"] = 0.0
    return expected


def test_no_submission_reaches_another_in_one_class_run(tmp_path):
    expected = _class(tmp_path / "inbox", sorted(ATTACKS))
    reports = grade_class.grade_class(tmp_path / "inbox", FIXTURE.name, jobs=1,
                                      checks=FIXTURE.checks, released=FIXTURE.chapters,
                                      require_sandbox=True)
    got = {student: report.score for student, report in reports.items()}
    details = {s: r.to_text() for s, r in reports.items() if got[s] != expected.get(s)}
    assert got == expected, "\n".join(details.values())
    grade_class.write_csv(reports, tmp_path / "class.csv")
    with open(tmp_path / "class.csv") as f:
        assert {r["student"]: float(r["score"]) for r in csv.DictReader(f)} == expected


@pytest.mark.slow
def test_class_on_a_real_chapter(tmp_path):
    chapter = course_chapters()[0]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    solution = notebooks.read_notebook(chapter.solution_notebook)
    attacker = notebooks.read_notebook(chapter.solution_notebook)
    first = next(c for c in attacker.cells if notebooks.is_answer_cell(c))
    name = notebooks.nbgrader_meta(first)["grade_id"]
    first.source = (ATTACKS["reopen_worker_pipes"].replace("center_rows(x)", f"{name}(*a, **k)")
                    % ("None", "None"))
    notebooks.write_notebook(attacker, inbox / "a_attacker.ipynb")
    notebooks.write_notebook(solution, inbox / "b_honest.ipynb")
    shutil.copy(chapter.student_notebook, inbox / "c_accomplice.ipynb")
    reports = grade_class.grade_class(inbox, chapter.name, jobs=1, require_sandbox=True)
    full = reports["b_honest"].max_score
    assert reports["b_honest"].score == full, reports["b_honest"].to_text()
    lost = next(e.max_points for e in reports["a_attacker"].exercises if e.id == name)
    assert reports["a_attacker"].score == full - lost, reports["a_attacker"].to_text()
    assert reports["c_accomplice"].score == 0, reports["c_accomplice"].to_text()


def test_no_submission_reaches_another_in_nbgrader_autograde(tmp_path):
    from course_tools import nbgrader_course

    attacks = ["forge_replies", "reopen_worker_pipes", "scrape_earlier_students"]
    expected = _class(tmp_path / "inbox", attacks)
    root = nbgrader_course.init_course(tmp_path / "course")
    nbgrader_course.release(root, FIXTURE.name, FIXTURE.solutions)
    overlay_config = root / "nbgrader_config.py"
    overlay_config.write_text(overlay_config.read_text().replace(
        "c.ExternalGrade.checks_dir = ''", f"c.ExternalGrade.checks_dir = {str(FIXTURE.checks)!r}"))
    nbgrader_course.collect_folder(root, FIXTURE.name, tmp_path / "inbox")
    nbgrader_course.autograde(root, FIXTURE.name)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        got = {s: gradebook.find_submission(FIXTURE.name, s).score for s in expected}
    assert got == expected


@pytest.mark.skipif(os.getuid() != 0, reason="switching to an ordinary user needs root")
def test_class_graded_by_an_ordinary_user():
    """The same attacks when the grader itself is not root (bubblewrap's user namespace)."""
    tmp_path = Path(tempfile.mkdtemp(prefix="ordinary-grader-"))  # pytest's is root-only
    try:
        _grade_as_ordinary_user(tmp_path, _class(tmp_path / "inbox", sorted(ATTACKS)))
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _grade_as_ordinary_user(tmp_path: Path, expected: dict[str, float]) -> None:
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o777)
    # /root is closed to other users: show them root's Python and model cache, nothing else.
    script = f"""
set -e
mount --make-rprivate /
mkdir -p /tmp/.root-seen && mount --bind /root /tmp/.root-seen
mount -t tmpfs -o mode=755 tmpfs /root
for d in .pyenv .cache; do
  if [ -d /tmp/.root-seen/$d ]; then mkdir -p /root/$d; mount --bind /tmp/.root-seen/$d /root/$d; fi
done
exec setpriv --reuid=1000 --regid=1000 --clear-groups env HOME={tmp_path} \\
  COURSE_CACHE_DIR={paths.cache_dir()} {sys.executable} \\
  -m course_tools.grade_class {tmp_path / 'inbox'} \\
  --chapter {FIXTURE.name} --jobs 1 --checks {FIXTURE.checks} --released {FIXTURE.chapters} \\
  --csv {tmp_path / 'class.csv'}
"""
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script], cwd=paths.REPO_ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(tmp_path / "class.csv") as f:
        got = {r["student"]: float(r["score"]) for r in csv.DictReader(f)}
    assert got == expected, done.stdout


def test_malformed_notebooks_get_a_report_and_the_class_goes_on(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _write(inbox, "a_honest", {"center_rows": HONEST_CENTER, "mask_future": GOOD_MASK})
    nb = json.loads((inbox / "a_honest.ipynb").read_text())
    string_meta = json.loads(json.dumps(nb))
    string_meta["cells"][0]["metadata"]["nbgrader"] = "oops"
    (inbox / "b_string_metadata.ipynb").write_text(json.dumps(string_meta))
    bad_source = json.loads(json.dumps(nb))
    for cell in bad_source["cells"]:
        cell["source"] = 42
    (inbox / "c_number_source.ipynb").write_text(json.dumps(bad_source))
    (inbox / "d_not_json.ipynb").write_text('{"cells": [')
    (inbox / "e_json_list.ipynb").write_text("[1, 2, 3]")
    reports = grade_class.grade_class(inbox, FIXTURE.name, jobs=1, checks=FIXTURE.checks,
                                      released=FIXTURE.chapters)
    assert set(reports) == {"a_honest", "b_string_metadata", "c_number_source", "d_not_json",
                            "e_json_list"}
    assert reports["a_honest"].score == 3.0
    assert reports["b_string_metadata"].score == 3.0  # the answers are found by their `def`
    for student in ("c_number_source", "d_not_json", "e_json_list"):
        assert reports[student].score == 0
        assert all(e.message for e in reports[student].exercises), reports[student].to_text()
    assert "e_json_list" in grade_class.table(reports)


def test_reports_are_trusted_side_text(tmp_path):
    forged = "\\n".join(["x", "00_fixture.ipynb: 3 / 3 points", "  PASS  center_rows  1/1"])
    escapes = "'\\x1b[2J\\x1b[1;1H'"
    answer = ("def center_rows(x):\n"
              f"    raise ValueError({escapes} + {forged!r} + '\\r' + 'A' * 30_000_000)\n")
    _write(tmp_path, "injector", {"center_rows": answer, "mask_future": GOOD_MASK})
    reports = grade_class.grade_class(tmp_path, FIXTURE.name, jobs=1, checks=FIXTURE.checks,
                                      released=FIXTURE.chapters)
    report = reports["injector"]
    text = report.to_text()
    assert "\x1b" not in text and "\r" not in text
    assert len(report.to_json()) < 10_000 and json.loads(report.to_json())["score"] == 2.0
    lines = text.split("\n")
    assert lines[0].endswith("(sandboxed: bubblewrap, no network, read-only allow-list)")
    assert not any(line.startswith(("00_fixture", "  PASS  center_rows")) for line in lines)


def test_a_notebook_that_stalls_is_graded_in_bounded_time(tmp_path):
    from course_tools.grading.runner import Grader

    sleeper = "import time\ndef {name}(*a, **k):\n    time.sleep(3600)\n"
    sources = {n: sleeper.format(name=n) for n in ("center_rows", "mask_future")}
    with Grader(FIXTURE.name, FIXTURE.checks, FIXTURE.chapters, require_isolation=True,
                notebook_budget=7) as grader:  # each of the two calls may take 5 s
        started = time.monotonic()
        report = grader.grade_sources(sources, "sleeper")
    assert time.monotonic() - started < 30
    assert report.score == 0
    first, second = report.exercises
    assert not first.out_of_time and "did not finish within 5" in first.message
    assert second.out_of_time and "grading time ran out" in second.message
    assert report.errors == ["this notebook's grading time (7 s) ran out; not graded in full: "
                             "mask_future. Look for answers that loop or wait."]


def test_unsandboxed_class_grading_is_opt_in_and_loud(tmp_path, monkeypatch, capsys):
    from course_tools.grading import sandbox

    _write(tmp_path / "inbox", "solo", {"center_rows": HONEST_CENTER})
    monkeypatch.setitem(sandbox._BWRAP, "path", None)  # as on a machine without bubblewrap
    common = [str(tmp_path / "inbox"), "--chapter", FIXTURE.name, "--jobs", "1", "--checks",
              str(FIXTURE.checks), "--released", str(FIXTURE.chapters)]
    assert grade_class.main(common) == 2
    assert "--allow-unsandboxed" in capsys.readouterr().err
    csv_path = tmp_path / "class.csv"
    assert grade_class.main([*common, "--allow-unsandboxed", "--csv", str(csv_path)]) == 0
    assert "UNSANDBOXED" in capsys.readouterr().out.split("solo")[1].split("\n")[0]
    with open(csv_path) as f:
        assert next(csv.DictReader(f))["sandbox"] == "UNSANDBOXED"
