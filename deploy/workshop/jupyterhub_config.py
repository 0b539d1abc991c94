"""JupyterHub for a workshop on one machine: every learner a real Unix account.

Run as root from the course checkout (``make setup hub-proxy`` done, SmolLM2 prepared into
the shared cache, see docs/INSTRUCTORS.md "A workshop server")::

    .venv/bin/python -m jupyterhub -f deploy/workshop/jupyterhub_config.py

Learners log in with their Unix password (PAM) if they are in the group ``course-learners``;
instructors (group ``course-instructors``) are hub admins. Each gets a single-user server
started as their own account from the course's virtualenv, with nbgrader's exchange at
``$COURSE_EXCHANGE`` (a folder with mode 1777) and the prepared SmolLM2 cache at
``$COURSE_CACHE_DIR`` (read-only for learners). Homes must be private (``HOME_MODE 0700`` in
/etc/login.defs, or ``chmod 700``): nbgrader keeps each learner's fetched work there.

The checkout, its ``.venv`` and the Python it was built from must be readable by every
account: install under /srv or /opt, not under a private /root.

``tests/test_jupyterhub.py`` starts this file (with loopback ports, a throwaway database and
test accounts layered on top) and runs release -> fetch -> submit -> collect -> autograde.
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821

HERE = Path(__file__).resolve().parent
COURSE_REPO = HERE.parents[1]
PYTHON = COURSE_REPO / ".venv" / "bin" / "python"
EXCHANGE = os.environ.get("COURSE_EXCHANGE", "/srv/nbgrader/exchange")
CACHE = os.environ.get("COURSE_CACHE_DIR", "/srv/mech-interp-course/cache")
# Peak of any chapter's kernel (README, performance table: 1.39 GB) plus the server itself.
MEMORY_PER_LEARNER = "2G"

c.JupyterHub.bind_url = os.environ.get("HUB_BIND_URL", "http://:8000")  # put TLS in front
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every learner's server
c.JupyterHub.db_url = os.environ.get("HUB_DB_URL", "sqlite:////srv/jupyterhub/jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.environ.get(
    "HUB_COOKIE_SECRET_FILE", "/srv/jupyterhub/jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.command = [
    str(COURSE_REPO / "deploy" / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy")]

c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {"course-learners", "course-instructors"}
c.PAMAuthenticator.admin_groups = {"course-instructors"}

c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(PYTHON), "-m", "jupyterhub.singleuser"]
c.Spawner.ip = "127.0.0.1"  # only the proxy talks to a learner's server
c.Spawner.notebook_dir = "~"
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# Recorded for a spawner that enforces it (jupyterhub-systemdspawner, KubeSpawner);
# LocalProcessSpawner does not: see docs/INSTRUCTORS.md, "Sizing".
c.Spawner.mem_limit = MEMORY_PER_LEARNER
c.Spawner.environment = {
    # nbgrader_config.py there: the exchange and the course id, for every account
    "JUPYTER_CONFIG_PATH": str(HERE / "jupyter"),
    "COURSE_EXCHANGE": EXCHANGE,
    "COURSE_CACHE_DIR": CACHE,
    # one thread per kernel: a room shares the cores (see docs/INSTRUCTORS.md, "Sizing")
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
