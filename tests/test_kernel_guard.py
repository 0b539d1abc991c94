"""A learner's own utils.py next to the notebooks hides the course's package: every course
kernel says so when an import fails because of it (course_tools/kernel_guard.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import jupyter_client

from utils import paths

GUARD = paths.REPO_ROOT / "course_tools" / "kernel_guard.py"


def _run_in_kernel(folder: Path, code: str) -> str:
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="python3",
                                                              cwd=str(folder))
    output: list[str] = []

    def keep(msg):
        if msg["msg_type"] == "stream":
            output.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            output.append("\n".join(msg["content"]["traceback"]))

    try:
        client.execute_interactive(code, output_hook=keep, timeout=120)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return "".join(output)


def test_the_environment_runs_the_guard_in_every_kernel():
    config = Path(sys.prefix) / "etc" / "ipython" / "ipython_kernel_config.py"
    assert config.is_file(), f"{config} is missing: run `make setup`"
    assert str(GUARD) in config.read_text(), f"{config} does not run {GUARD}: run `make setup`"


def test_a_shadowing_utils_py_is_named_with_what_to_do(tmp_path):
    # (A utils/ folder of the learner's does not break the course's imports: the editable
    # install's finder resolves utils.<module> to the course's files.)
    (tmp_path / "utils.py").write_text("x = 1\n")
    text = _run_in_kernel(tmp_path, "from utils.smollm2 import load_smollm2")
    assert "ModuleNotFoundError" in text
    assert f"`utils` here is {tmp_path / 'utils.py'}" in text and "Rename it" in text, text


def test_the_course_package_itself_gets_no_warning(tmp_path):
    text = _run_in_kernel(tmp_path, "import utils\nfrom utils import no_such_module")
    assert "ImportError" in text and "hides the course" not in text, text
