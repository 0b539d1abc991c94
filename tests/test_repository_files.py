"""The files a hosted repository and its contributors expect, kept true to the project."""

import re

from utils.paths import REPO_ROOT


def test_licences_for_code_and_content():
    assert (REPO_ROOT / "LICENSE").read_text().startswith("MIT License")
    content = (REPO_ROOT / "LICENSE-CONTENT").read_text()
    assert "CC BY 4.0" in content and "creativecommons.org/licenses/by/4.0" in content


def test_ci_workflow_runs_the_local_ci_script():
    workflow = (REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert re.search(r"^\s+run: bash \.ci/run$", workflow, re.M)
    assert (REPO_ROOT / ".ci" / "run").is_file()


def test_pre_commit_ruff_matches_the_pinned_ruff():
    pinned = re.search(r"^ruff==(\S+)$", (REPO_ROOT / "requirements.txt").read_text(), re.M)
    config = (REPO_ROOT / ".pre-commit-config.yaml").read_text()
    assert "astral-sh/ruff-pre-commit" in config
    assert f"rev: v{pinned.group(1)}" in config


def test_contributing_points_at_what_exists():
    text = (REPO_ROOT / "CONTRIBUTING.md").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", text, re.M):
        assert re.search(rf"^{target}:", makefile, re.M), target
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        assert (REPO_ROOT / link).exists(), link


def test_requirements_header_points_at_a_real_section():
    header = (REPO_ROOT / "requirements.txt").read_text().split("\n\n")[0]
    for doc, section in re.findall(r"see (\S+\.md) \(([^)]+)\)", header):
        assert f"## {section}" in (REPO_ROOT / doc).read_text(), (doc, section)
    assert "README (Installing)" not in header


def test_make_lab_hides_the_instructor_panels_binder_hides():
    import json

    post_build = (REPO_ROOT / "binder" / "postBuild").read_text()
    lab_hidden = set(re.findall(r"jupyter labextension disable (\S+)", post_build))
    server_hidden = set(re.findall(r"jupyter server extension disable .*?(\S+)$", post_build,
                                   re.M))
    config = REPO_ROOT / "binder" / "learner-jupyter"
    page = json.loads((config / "labconfig" / "page_config.json").read_text())
    server = json.loads((config / "jupyter_server_config.json").read_text())
    assert lab_hidden and {k for k, v in page["disabledExtensions"].items() if v} == lab_hidden
    extensions = server["ServerApp"]["jpserver_extensions"]
    assert server_hidden and {k for k, v in extensions.items() if v is False} == server_hidden
    lab = re.search(r"^lab:.*?(?=^\S)", (REPO_ROOT / "Makefile").read_text(), re.M | re.S)
    assert "binder/learner-jupyter" in lab.group(0)
    assert '[ "$$(id -u)" = "0" ] && echo --allow-root' in lab.group(0)
    assert "chapters/utils.py" in lab.group(0)


def _readme_table_names(header: str) -> set[str]:
    """The backticked names in the first column of the README table that starts at ``header``."""
    text = (REPO_ROOT / "README.md").read_text()
    table = text[text.index(header):].split("\n\n", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines()[2:] if line.startswith("|")]
    return {name.rstrip("/") for cell in first_cells  # a package's submodules in (...) aside
            for name in re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cell))}


def test_readme_tables_name_every_module_in_its_package():
    for package, header in (("utils", "| `utils/` module"),
                            ("course_tools", "| `course_tools/` module")):
        folder = REPO_ROOT / package
        modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        modules |= {p.name for p in folder.iterdir()
                    if p.is_dir() and (p / "__init__.py").is_file()}
        named = _readme_table_names(header)
        assert modules <= named, f"{package}/ modules missing from the README: {modules - named}"
        assert named <= modules, f"README names {named - modules} under {package}/, not there"
