"""A real JupyterHub with real Unix accounts: nbgrader's exchange between separate users.

The test starts ``deploy/workshop/jupyterhub_config.py`` (JupyterHub from the venv, its proxy
from ``deploy/proxy``, ``make hub-proxy``) on loopback ports, creates an instructor and two
learners as Unix accounts with private homes, and starts each one's single-user server. The
instructor releases the fixture chapter through their own server's kernel; each learner
fetches it, answers (one honestly, one with a hostile answer) and submits through their own
server's nbgrader API; the hostile learner's kernel then tries to read the other learner's
work and the instructor's files. The instructor collects and autogrades with the sandboxed
grader (bubblewrap as an ordinary user) in their kernel. Everything is stopped and the
accounts removed at the end, pass or fail.

The fixture chapter keeps the test short; the real chapters go through the same code.

If Python or the checkout lives under a folder other accounts cannot enter (CI's
``/root/.pyenv``), the hub runs in its own mount namespace in which that folder is replaced by
an empty one holding only the paths the accounts need (:func:`shared_view_script`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from shlex import quote

import pytest
import requests

from course_tools.nbgrader_course import COURSE_ID
from tests.course_layout import FIXTURE
from tests.test_nbgrader_exchange import ANSWER as HONEST_ANSWERS
from utils import paths

pytestmark = pytest.mark.slow

WORKSHOP_CONFIG = paths.REPO_ROOT / "deploy" / "workshop" / "jupyterhub_config.py"
PROXY = paths.REPO_ROOT / "deploy" / "proxy" / "node_modules" / ".bin" / "configurable-http-proxy"
CHAPTER = FIXTURE.name
START_TIMEOUT = 120.0
HOSTILE_ANSWERS = {
    # claims equality with anything, after trying to write the instructor's gradebook
    "center_rows": "def center_rows(x):\n"
                   "    import glob\n"
                   "    for path in glob.glob('/home/*/course/gradebook.db'):\n"
                   "        try:\n"
                   "            open(path, 'ab').write(b'0')\n"
                   "        except OSError:\n"
                   "            pass\n"
                   "    class Always:\n"
                   "        def __eq__(self, other):\n"
                   "            return True\n"
                   "    return Always()\n",
    "mask_future": "def mask_future(s):\n    import os\n    os._exit(0)\n",
}


def why_not_runnable() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.getuid() != 0:
        return "needs root: it creates Unix accounts and starts a hub that spawns as them"
    for tool in ("useradd", "userdel", "unshare", "mount", "bwrap"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (bwrap: apt-get install bubblewrap)"
    if importlib.util.find_spec("jupyterhub") is None:
        return "jupyterhub is not installed (pip install -r requirements.txt)"
    if not PROXY.exists():
        return f"configurable-http-proxy is not installed at {PROXY}: run `make hub-proxy`"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ what the accounts can see
def private_ancestor(path: Path) -> Path | None:
    """The outermost folder above ``path`` that other accounts may not enter, if any."""
    for folder in reversed(Path(path).parents):
        if folder != Path("/") and not os.stat(folder).st_mode & 0o001:
            return folder
    return None


def shared_view_script(needed: list[Path], stage: Path) -> str:
    """Shell commands, for a private mount namespace, that make ``needed`` reachable by every
    account: each private folder above them is bound to ``stage`` and covered by an empty
    tmpfs (mode 0755) into which only the needed paths are bound back."""
    by_private: dict[Path, set[Path]] = {}
    for path in needed:
        private = private_ancestor(path)
        if private is not None:
            by_private.setdefault(private, set()).add(path)
    lines = ["set -e"]
    for number, (private, inside) in enumerate(sorted(by_private.items())):
        original = quote(str(stage / str(number)))
        lines += [f"mkdir -p {original}", f"mount --bind {quote(str(private))} {original}",
                  f"mount -t tmpfs -o mode=0755 tmpfs {quote(str(private))}"]
        for path in sorted(inside):
            bound = quote(str(stage / str(number) / path.relative_to(private)))
            lines += [f"mkdir -p {quote(str(path))}", f"mount --bind {bound} {quote(str(path))}"]
    return "\n".join(lines + ['exec "$@"'])


def paths_the_accounts_need() -> list[Path]:
    """Python, the virtualenv and the checkout (course code, proxy, hub configs)."""
    return [Path(os.path.realpath(sys.base_prefix)), Path(sys.prefix), paths.REPO_ROOT]


# ------------------------------------------------------------------ Unix accounts
class UnixAccounts:
    """Accounts made for one test run (private homes); :meth:`remove_all` stops their
    processes and deletes them with their homes."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.names: list[str] = []

    def create(self, role: str) -> str:
        name = f"mic-{role}-{self.tag}"
        subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin",
                        "-K", "HOME_MODE=0700", name], check=True, capture_output=True)
        self.names.append(name)
        self.home(name).chmod(0o700)  # older useradd ignores HOME_MODE
        return name

    def home(self, name: str) -> Path:
        import pwd

        return Path(pwd.getpwnam(name).pw_dir)

    def uid(self, name: str) -> int:
        import pwd

        return pwd.getpwnam(name).pw_uid

    def remove_all(self) -> None:
        import psutil

        uids = {self.uid(name) for name in self.names}
        leftovers = [p for p in psutil.process_iter(["uids"]) if p.info["uids"]
                     and p.info["uids"].real in uids]
        for process in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(leftovers, timeout=10)
        for name in self.names:
            subprocess.run(["userdel", "--remove", name], capture_output=True)
        self.names.clear()


# ------------------------------------------------------------------ the hub
TEST_CONFIG = """# the workshop configuration on loopback, with the test's accounts and API service
load_subconfig({workshop!r})  # noqa: F821
c = get_config()  # noqa: F821
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.Authenticator.allowed_users = {users!r}
c.Authenticator.admin_users = {{{instructor!r}}}
c.JupyterHub.services = [{{"name": "course-test", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["course-test"]}}]
"""


class Hub:
    """A JupyterHub started from the workshop config; talks to it as an admin service."""

    def __init__(self, workdir: Path, exchange: Path, model_cache: Path, instructor: str,
                 users: list[str]):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(32)
        self.log = workdir / "jupyterhub.log"
        (workdir / "jupyterhub_config.py").write_text(TEST_CONFIG.format(
            workshop=str(WORKSHOP_CONFIG), hub_port=free_port(), proxy_api_port=free_port(),
            users=set(users), instructor=instructor, token=self.token))
        self.env = {**os.environ, "HUB_BIND_URL": self.url,
                    "HUB_DB_URL": f"sqlite:///{workdir / 'jupyterhub.sqlite'}",
                    "HUB_COOKIE_SECRET_FILE": str(workdir / "cookie_secret"),
                    "COURSE_EXCHANGE": str(exchange),
                    "COURSE_CACHE_DIR": str(model_cache)}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        hub = [sys.executable, "-m", "jupyterhub", "-f", str(self.workdir / "jupyterhub_config.py")]
        needed = paths_the_accounts_need()
        if any(private_ancestor(p) for p in needed):
            hub = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   shared_view_script(needed, self.workdir / "view"), "sh", *hub]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(hub, cwd=self.workdir, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.wait(lambda: self.api("GET", "/").ok, "the hub to answer")

    def wait(self, ready, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub stopped while waiting for {what}:\n{self.tail()}")
            try:
                if ready():
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, f"{self.url}/hub/api{path}", timeout=30,
                                headers={"Authorization": f"token {self.token}"}, **kwargs)

    def start_server(self, user: str) -> None:
        self.api("POST", f"/users/{user}/server").raise_for_status()

    def wait_for_server(self, user: str) -> None:
        def ready() -> bool:
            server = self.api("GET", f"/users/{user}").json().get("servers", {}).get("", {})
            return bool(server.get("ready"))
        self.wait(ready, f"{user}'s server")

    def token_for(self, user: str) -> str:
        reply = self.api("POST", f"/users/{user}/tokens",
                         json={"note": "course hub test", "expires_in": 900})
        reply.raise_for_status()
        return reply.json()["token"]

    def stop(self) -> None:
        """Stop the hub (which stops the servers and the proxy), then anything left of it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        pid_file = self.workdir / "jupyterhub-proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        self.process = None


class SingleUser:
    """One account's own server, reached through the hub's proxy with that account's token."""

    def __init__(self, hub: Hub, name: str, token: str) -> None:
        self.name = name
        self.base = f"{hub.url}/user/{name}"
        self.ws_base = self.base.replace("http://", "ws://", 1)
        self.headers = {"Authorization": f"token {token}"}

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        reply = requests.request(method, self.base + path, headers=self.headers, timeout=120,
                                 **kwargs)
        assert reply.ok, f"{self.name}: {method} {path}: {reply.status_code} {reply.text[:2000]}"
        return reply

    def assignments(self) -> list[dict]:
        return self.call("GET", "/assignments", params={"course_id": COURSE_ID}).json()["value"]

    def nbgrader_action(self, action: str, assignment: str) -> dict:
        return self.call("POST", f"/assignments/{action}",
                         data={"assignment_id": assignment, "course_id": COURSE_ID}).json()

    def answer(self, notebook: str, answers: dict[str, str]) -> None:
        """Replace answer cells' code (by grade id), through the contents API."""
        path = f"/api/contents/{notebook}"
        nb = self.call("GET", path, params={"content": 1}).json()["content"]
        for cell in nb["cells"]:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if cell["cell_type"] == "code" and grade_id in answers:
                cell["source"] = answers[grade_id]
        self.call("PUT", path, json={"type": "notebook", "format": "json", "content": nb})

    def run(self, code: str, timeout: float = 240.0) -> str:
        """Run ``code`` in a new kernel of this server; its printed output (raise on error)."""
        import websocket

        kernel = self.call("POST", "/api/kernels", json={"name": "python3"}).json()["id"]
        try:
            ws = websocket.create_connection(
                f"{self.ws_base}/api/kernels/{kernel}/channels", header=self.headers,
                timeout=timeout)
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "username": self.name, "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False,
                            "stop_on_error": True}}))
            printed, error = [], None
            while True:
                message = json.loads(ws.recv())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = message["msg_type"], message["content"]
                if kind == "stream":
                    printed.append(content["text"])
                elif kind == "error":
                    error = f"{content['ename']}: {content['evalue']}"
                elif kind == "status" and content["execution_state"] == "idle":
                    break
            ws.close()
        finally:
            self.call("DELETE", f"/api/kernels/{kernel}")
        assert error is None, f"{self.name}'s kernel: {error}\n{''.join(printed)}"
        return "".join(printed)


# ------------------------------------------------------------------ what each account runs
INSTRUCTOR_RELEASE = """
from pathlib import Path
from course_tools import nbgrader_course
from course_tools.grading.sandbox import bubblewrap_path
print("sandbox:", bubblewrap_path())
root = nbgrader_course.init_course(Path.home() / "course", Path({exchange!r}),
                                   checks_dir={checks!r})
nbgrader_course.release(root, {chapter!r}, Path({solutions!r}))
nbgrader_course.release_to_exchange(root, {chapter!r})
"""
INSTRUCTOR_GRADE = """
from pathlib import Path
from course_tools import nbgrader_course
root = Path.home() / "course"
nbgrader_course.collect_from_exchange(root, {chapter!r})
for learner in {learners!r}:
    nbgrader_course.nbgrader(root, "db", "student", "add", learner)
nbgrader_course.autograde(root, {chapter!r})
print(nbgrader_course.score_table(root, {chapter!r}))
"""
TRY_TO_READ = """
import json, os
outcome = {{}}
for what, path in {targets!r}.items():
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").read(1)
        outcome[what] = "read"
    except PermissionError:
        outcome[what] = "denied"
    except OSError as exc:
        outcome[what] = type(exc).__name__
print(json.dumps(outcome))
"""


@pytest.fixture
def hub_room(tmp_path):
    """(hub, instructor, [honest, hostile], accounts, exchange): servers started; everything
    stopped and removed afterwards."""
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason)
    accounts = UnixAccounts()
    shared = Path(tempfile.mkdtemp(prefix="mic-hub-"))  # not under tmp_path: pytest's is 0700
    shared.chmod(0o755)
    hub = None
    try:
        instructor = accounts.create("instructor")
        learners = [accounts.create("learner-1"), accounts.create("learner-2")]
        exchange = shared / "exchange"
        exchange.mkdir()
        shutil.chown(exchange, instructor, instructor)  # release_to_exchange sets mode 1777
        model_cache = shared / "model-cache"  # the fixture chapter loads no model
        model_cache.mkdir(mode=0o755)
        hub = Hub(tmp_path, exchange, model_cache, instructor, [instructor, *learners])
        hub.start()
        for user in (instructor, *learners):
            hub.start_server(user)
        for user in (instructor, *learners):
            hub.wait_for_server(user)
        servers = {user: SingleUser(hub, user, hub.token_for(user))
                   for user in (instructor, *learners)}
        yield hub, servers[instructor], [servers[u] for u in learners], accounts, exchange
    finally:
        if hub is not None:
            hub.stop()
        accounts.remove_all()
        shutil.rmtree(shared, ignore_errors=True)


def test_release_fetch_submit_collect_autograde_with_real_accounts(hub_room):
    from nbgrader.api import Gradebook

    hub, instructor, (honest, hostile), accounts, exchange = hub_room
    notebook = f"{CHAPTER}/{CHAPTER}.ipynb"

    said = instructor.run(INSTRUCTOR_RELEASE.format(
        exchange=str(exchange), checks=str(FIXTURE.checks), chapter=CHAPTER,
        solutions=str(FIXTURE.solutions)))
    if "sandbox: None" in said:
        pytest.skip("bubblewrap cannot build the sandbox for an ordinary account here "
                    "(unprivileged user namespaces are off)")

    for learner, answers in ((honest, HONEST_ANSWERS), (hostile, HOSTILE_ANSWERS)):
        assert CHAPTER in [a["assignment_id"] for a in learner.assignments()]
        learner.nbgrader_action("fetch", CHAPTER)
        learner.answer(notebook, answers)
        submitted = learner.nbgrader_action("submit", CHAPTER)
        assert submitted.get("success", True), submitted
    inbound = exchange / COURSE_ID / "inbound"
    assert sorted(p.name.split("+")[0] for p in inbound.iterdir()) == sorted(
        [honest.name, hostile.name]), "nbgrader took each learner's id from their account"

    honest_home, instructor_home = accounts.home(honest.name), accounts.home(instructor.name)
    outcome = json.loads(hostile.run(TRY_TO_READ.format(targets={
        "the exchange's inbound folder (everyone's submissions)": str(inbound),
        "the other learner's home": str(honest_home),
        "the other learner's answers": str(honest_home / notebook),
        "the instructor's course folder": str(instructor_home / "course"),
        "the instructor's gradebook": str(instructor_home / "course" / "gradebook.db"),
    })))
    assert set(outcome.values()) == {"denied"}, outcome

    table = instructor.run(INSTRUCTOR_GRADE.format(chapter=CHAPTER,
                                                   learners=[honest.name, hostile.name]))
    assert "UNSANDBOXED" not in table, table
    with Gradebook(f"sqlite:///{instructor_home / 'course' / 'gradebook.db'}") as gradebook:
        scores = {who: gradebook.find_submission(CHAPTER, who).score
                  for who in (honest.name, hostile.name)}
    assert scores == {honest.name: 3.0, hostile.name: 0.0}, table
