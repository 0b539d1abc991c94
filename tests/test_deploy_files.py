"""The deployment files in ``deploy/`` agree with each other and with the course.

The workshop server's JupyterHub config loads and points at this checkout; the Kubernetes
values give each learner the same memory as the workshop server, mount the same exchange that
nbgrader is told about, keep the image's SmolLM2 cache visible, and ask for the JupyterHub the
image pins. The chart's own schema is checked when the chart is available: it is not a package
on PyPI or npm, so point ``Z2JH_CHART_DIR`` at the chart folder of
jupyterhub/zero-to-jupyterhub-k8s (``jupyterhub/``, with ``values.schema.yaml``) to run it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from course_tools import nbgrader_course
from course_tools.bench import BUDGETS
from course_tools.pins import read_pins
from utils import paths

DEPLOY = paths.REPO_ROOT / "deploy"
WORKSHOP = DEPLOY / "workshop" / "jupyterhub_config.py"
VALUES = DEPLOY / "kubernetes" / "values.yaml"
BUILD_IMAGE = DEPLOY / "kubernetes" / "build-image.sh"
BINDER = paths.REPO_ROOT / "binder"
SERVER_MB = 128  # a single-user server beside its kernel


def gigabytes(size: str) -> float:
    """'2G' / '1.5G' / '512M' as GB (KubeSpawner's and JupyterHub's units are powers of 2)."""
    number, unit = re.fullmatch(r"([\d.]+)([KMGT])", size).groups()
    return float(number) * 1024 ** "KMGT".index(unit) / 1024 ** 2


def run_config(path: Path, env: dict[str, str] | None = None) -> tuple[Config, dict]:
    """Execute a traitlets config file as JupyterHub or nbgrader would: (config, its globals)."""
    config = Config()
    namespace = {"get_config": lambda: config, "__file__": str(path)}
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        exec(compile(path.read_text(), str(path), "exec"), namespace)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return config, namespace


def test_workshop_config_loads_and_points_at_this_checkout():
    pytest.importorskip("jupyterhub")
    from jupyterhub.app import JupyterHub

    hub = JupyterHub()
    hub.load_config_file(str(WORKSHOP))
    assert hub.authenticator_class.__name__ == "PAMAuthenticator"
    assert hub.spawner_class.__name__ == "LocalProcessSpawner"
    spawner = hub.config.Spawner
    assert Path(spawner.cmd[0]) == paths.REPO_ROOT / ".venv" / "bin" / "python"
    assert spawner.cmd[1:] == ["-m", "jupyterhub.singleuser"]
    assert spawner.ip == "127.0.0.1"
    assert hub.config.ConfigurableHTTPProxy.command == [
        str(DEPLOY / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy")]
    assert hub.config.JupyterHub.cleanup_servers is True
    nbgrader_dir = Path(spawner.environment["JUPYTER_CONFIG_PATH"])
    shared, _ = run_config(nbgrader_dir / "nbgrader_config.py",
                           {"COURSE_EXCHANGE": spawner.environment["COURSE_EXCHANGE"]})
    assert shared.Exchange.root == spawner.environment["COURSE_EXCHANGE"]
    assert shared.CourseDirectory.course_id == nbgrader_course.COURSE_ID


def test_kubernetes_values_match_the_workshop_server_and_the_course():
    values = yaml.safe_load(VALUES.read_text())
    single = values["singleuser"]
    _, workshop = run_config(WORKSHOP)
    # memory: the same per learner everywhere, above the chapter kernels' budget
    assert single["memory"]["limit"] == workshop["MEMORY_PER_LEARNER"]
    assert (gigabytes(single["memory"]["limit"]) * 1024
            >= BUDGETS["chapter_peak_mb"] + SERVER_MB)
    assert gigabytes(single["memory"]["guarantee"]) <= gigabytes(single["memory"]["limit"])
    # the exchange: mounted where nbgrader's config and the environment say it is
    mounted = {m["name"]: m["mountPath"] for m in single["storage"]["extraVolumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
              for v in single["storage"]["extraVolumes"]}
    exchange = single["extraEnv"]["COURSE_EXCHANGE"]
    assert mounted["nbgrader-exchange"] == exchange
    claim = yaml.safe_load((DEPLOY / "kubernetes" / "nbgrader-exchange.yaml").read_text())
    assert claims["nbgrader-exchange"] == claim["metadata"]["name"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    nbgrader_file = single["extraFiles"]["nbgrader-config"]
    assert nbgrader_file["mountPath"] == "/etc/jupyter/nbgrader_config.py"
    shared = Config()
    exec(nbgrader_file["stringData"], {"get_config": lambda: shared})
    assert shared.Exchange.root == exchange
    assert shared.CourseDirectory.course_id == nbgrader_course.COURSE_ID
    # the home volume sits below the image's home, so the baked SmolLM2 cache stays visible
    home = Path(single["storage"]["homeMountPath"])
    assert home.parent == Path("/home/jovyan") and home != Path("/home/jovyan/.cache")
    assert values["hub"]["config"]["KubeSpawner"]["notebook_dir"] == str(home)


def test_the_image_is_built_from_binder_with_the_hub_the_chart_runs():
    """build-image.sh runs repo2docker on the repository root, where binder/ (the folder
    Binder uses) takes precedence; binder/ bakes the SmolLM2 cache in and pins the
    JupyterHub that jupyterhub-singleuser needs, at the chart's version."""
    script = BUILD_IMAGE.read_text()
    assert 'cd "$(dirname "$0")/../.."' in script
    assert re.search(r"^exec repo2docker .* \.$", script, re.M)
    assert not (BINDER / "Dockerfile").exists()  # it would replace the environment recipe
    assert "python -m utils.smollm2 --prepare" in (BINDER / "postBuild").read_text()
    pinned = read_pins(paths.REPO_ROOT / "requirements.txt")["jupyterhub"]
    assert f"- jupyterhub=={pinned}" in (BINDER / "environment.yml").read_text()
    chart_hub = re.search(r"JupyterHub (\d+\.\d+\.\d+)", VALUES.read_text()).group(1)
    assert chart_hub == pinned


def merged(defaults: dict, overrides: dict) -> dict:
    """Helm's merge of a values file into the chart's defaults (maps merge, the rest replace)."""
    result = dict(defaults)
    for key, value in overrides.items():
        both_maps = isinstance(value, dict) and isinstance(defaults.get(key), dict)
        result[key] = merged(defaults[key], value) if both_maps else value
    return result


def test_kubernetes_values_pass_the_charts_schema():
    """What ``helm install -f values.yaml`` checks: the chart's defaults with our values
    merged in, against the chart's values schema."""
    chart = os.environ.get("Z2JH_CHART_DIR")
    if not chart:
        pytest.skip("the Zero to JupyterHub chart is not available as a package here; set "
                    "Z2JH_CHART_DIR to its jupyterhub/ folder (values.yaml, values.schema.yaml)")
    import jsonschema

    schema = yaml.safe_load((Path(chart) / "values.schema.yaml").read_text())
    defaults = yaml.safe_load((Path(chart) / "values.yaml").read_text())
    jsonschema.validate(merged(defaults, yaml.safe_load(VALUES.read_text())), schema)
