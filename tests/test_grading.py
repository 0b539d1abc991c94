"""The grader's interfaces: codec safety, CLI report format, unsandboxed fallback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.course_layout import FIXTURE
from utils import paths
from utils.grading import codec, sandbox
from utils.grading.runner import Grader, chapter_of

FIXTURE_ARGS = ["--checks", str(FIXTURE.checks), "--released", str(FIXTURE.chapters)]


def test_codec_round_trip_keeps_structure_and_values():
    value = {"a": torch.arange(6.0).reshape(2, 3), "b": (1, 2.5, "s", None, True),
             "c": [float("nan"), float("inf")], (0, 1): torch.tensor(3), "big": 2**70}
    tree, blob = codec.encode(value)
    back = codec.decode(json.loads(json.dumps(tree)), blob)
    assert torch.equal(back["a"], value["a"]) and back["b"] == value["b"]
    assert back["c"][1] == float("inf") and back["c"][0] != back["c"][0]
    assert torch.equal(back[(0, 1)], torch.tensor(3)) and back["big"] == 2**70


def test_codec_refuses_objects_and_never_builds_sandbox_values_on_trusted_side():
    with pytest.raises(codec.EncodingError, match="cannot be graded"):
        codec.encode(object())
    tree, blob = codec.encode(codec.SandboxValue("utils.grading.recipes:model", name="x"))
    with pytest.raises(codec.EncodingError):
        codec.decode(tree, blob)
    with pytest.raises(ValueError):
        codec.SandboxValue("os:system")


def test_tensor_subclass_arrives_as_plain_tensor():
    class Liar(torch.Tensor):
        def __eq__(self, other):
            return True

    tree, blob = codec.encode(torch.zeros(2).as_subclass(Liar))
    assert type(codec.decode(tree, blob)) is torch.Tensor


def test_chapter_of_names():
    assert chapter_of("x/01_residual_stream.ipynb") == "01_residual_stream"
    assert chapter_of("01_residual_stream.alice.ipynb") == "01_residual_stream"
    with pytest.raises(ValueError, match="--chapter"):
        chapter_of("homework.ipynb")


def _grade_cli(*args):
    return subprocess.run([sys.executable, "-m", "utils.grade", *args], capture_output=True,
                          text=True, cwd=paths.REPO_ROOT, timeout=300)


def test_cli_json_report_for_solution_and_stub():
    done = _grade_cli(str(FIXTURE.solution_notebook), "--json", *FIXTURE_ARGS)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= {"notebook", "score", "max_score", "exercises"}
    assert report["score"] == report["max_score"] == 3.0
    assert [e["id"] for e in report["exercises"]] == ["center_rows", "mask_future"]
    assert set(report["exercises"][0]) == {"id", "points", "max_points", "passed", "message"}
    stub = json.loads(_grade_cli(str(FIXTURE.student_notebook), "--json", *FIXTURE_ARGS).stdout)
    assert stub["score"] == 0.0


def test_cli_bad_input_is_explained():
    missing = _grade_cli("nope/01_x.ipynb")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    unnamed = _grade_cli(str(paths.REPO_ROOT / "pyproject.toml"))
    assert unnamed.returncode == 2 and "--chapter" in unnamed.stderr


def test_unsandboxed_fallback_still_grades_and_says_so(monkeypatch):
    monkeypatch.setattr(sandbox, "bubblewrap_path", lambda: None)
    with Grader(FIXTURE.name, FIXTURE.checks, FIXTURE.chapters) as grader:
        report = grader.grade_notebook(FIXTURE.solution_notebook)
    assert report.score == report.max_score
    assert "UNSANDBOXED" in report.sandbox


def test_instructor_mode_refuses_without_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "bubblewrap_path", lambda: None)
    grader = Grader(FIXTURE.name, FIXTURE.checks, FIXTURE.chapters, require_isolation=True)
    with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap"):
        grader.__enter__()
