"""The grader's interfaces: codec safety, CLI report format, unsandboxed fallback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from course_tools.grading import codec, sandbox
from course_tools.grading.runner import Grader, chapter_of
from tests.course_layout import FIXTURE
from utils import paths

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
    tree, blob = codec.encode(codec.SandboxValue("course_tools.grading.recipes:model", name="x"))
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


@pytest.mark.slow
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


def test_warm_up_runs_while_the_worker_starts(monkeypatch):
    """The checks module's warm_up() is called after the worker is launched and before the
    grader waits for it; a setup cell that fails still fails at the start, saying why."""
    events = []
    launch, wait = sandbox.Sandbox.launch, sandbox.Sandbox.wait_ready
    monkeypatch.setattr(sandbox.Sandbox, "launch", lambda self: (events.append("launch"),
                                                                 launch(self))[1])
    monkeypatch.setattr(sandbox.Sandbox, "wait_ready", lambda self: (events.append("wait"),
                                                                     wait(self))[1])
    grader = Grader(FIXTURE.name, FIXTURE.checks, FIXTURE.chapters)
    monkeypatch.setattr(grader.module, "warm_up", lambda: events.append("warm_up"),
                        raising=False)
    with grader:
        assert events[:3] == ["launch", "warm_up", "wait"]
        assert grader.grade_notebook(FIXTURE.solution_notebook).score > 0
    broken = Grader(FIXTURE.name, FIXTURE.checks, FIXTURE.chapters)
    broken.sandbox.setup_source = "import torch\nraise RuntimeError('setup broke')\n"
    with pytest.raises(RuntimeError, match="could not start: .*setup broke"):
        broken.__enter__()
    assert broken.sandbox.process is None
    dead = Grader(FIXTURE.name, FIXTURE.checks, FIXTURE.chapters)
    dead.sandbox.setup_source = ("import os, sys\nsys.stderr.write('no module named thing')\n"
                                 "os._exit(3)\n")
    with pytest.raises(RuntimeError, match="its last words: .*no module named thing"):
        dead.__enter__()  # a worker that dies says why, in its own words


SIDE_EFFECTS = {
    "edits_tensor": ("def f(x, cache, model):\n    x += 1\n    return 0\n", "argument `x`"),
    "edits_cache": ("def f(x, cache, model):\n    cache['hook_embed'].mul_(2)\n    return 0\n",
                    r"argument `cache` \(the activation cache: .*'hook_embed'"),
    "replaces_cache_entry": (
        "def f(x, cache, model):\n    cache.cache_dict['hook_embed'] = x\n    return 0\n",
        r"argument `cache` \(the activation cache: .*'hook_embed'"),
    "edits_weights": ("import torch\ndef f(x, cache, model):\n    with torch.no_grad():\n"
                      "        model.W_U.zero_()\n    return 0\n", "the model's weights"),
    "leaves_hook": ("def f(x, cache, model):\n"
                    "    model.add_hook('blocks.0.hook_resid_pre', lambda a, hook: a)\n"
                    "    return 0\n", r"hook\(s\) attached"),
    "leaves_training_mode": ("def f(x, cache, model):\n    model.train()\n    return 0\n",
                             "training mode"),
}


@pytest.fixture(scope="module")
def fixture_grader():
    with Grader(FIXTURE.name, FIXTURE.checks, FIXTURE.chapters) as grader:
        yield grader


@pytest.mark.parametrize("case", SIDE_EFFECTS)
def test_changing_an_input_fails_the_call(fixture_grader, case):
    from course_tools.grading.checks import (
        Submission,
        SubmissionError,
        sandbox_cache,
        sandbox_model,
    )

    source, expected = SIDE_EFFECTS[case]
    clean = "def f(x, cache, model):\n    model.run_with_hooks(x, fwd_hooks=[])\n    return 0\n"
    tokens = torch.tensor([[0, 5, 7, 9]])
    args = (tokens.clone(), sandbox_cache("attn_only_2l", tokens, ["hook_embed"]),
            sandbox_model("attn_only_2l"))
    assert Submission(fixture_grader.sandbox, {"f": clean}).function("f")(*args) == 0
    with pytest.raises(SubmissionError, match=expected) as failure:
        Submission(fixture_grader.sandbox, {"f": source}).function("f")(*args)
    assert "Leave inputs as they were" in str(failure.value)


def test_a_partial_overlay_falls_back_to_the_public_checks(tmp_path, monkeypatch):
    from course_tools.grading.runner import load_checks_module

    (tmp_path / "test_02_qk_ov_circuits.py").write_text("MUTANTS = {}\n")
    monkeypatch.setenv("COURSE_CHECKS_DIR", str(tmp_path))
    assert load_checks_module("02_qk_ov_circuits").__file__ == \
        str(tmp_path / "test_02_qk_ov_circuits.py")
    assert load_checks_module("01_residual_stream").__file__ == \
        str(paths.HIDDEN_CHECKS_DIR.resolve() / "test_01_residual_stream.py")
