"""Hurricane's image, built from the Dockerfile and run for real with rootful podman.

No Docker engine runs here and no registry is reachable: ``image/podman-setup.sh``
installs podman, configures it for this sandbox and builds a stand-in for the python
base image with debootstrap (cached in image/.cache/, so only the first run takes
minutes). Nothing here skips: if podman cannot build or run, the tests fail.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import (
    DEMO_PROJECT,
    ROOT,
    TEST_PROJECT,
    delete_celery_queue,
    free_port,
    postgres_database,
)

# The first run installs packages, debootstraps the stand-in and builds the image.
pytestmark = pytest.mark.timeout(1800)

IMAGE_DIR = ROOT / "image"
PODMAN = IMAGE_DIR / "podman"
BASE_TAG = "localhost/hurricane:image-test"
DEMO_TAG = "localhost/hurricane-demo:image-test"
USER_TAG = "localhost/hurricane-user-project:image-test"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
USER_ID = 10001
PROJECT_VERSION = re.search(
    r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M
).group(1)
# A size above the base that only a compiler, a cache or a stray wheel would exceed
# (measured: about 105 MB, debugpy's 20 included).
MAX_SIZE_ABOVE_BASE = 120 * 1000 * 1000


def podman(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run podman with the configuration image/podman-setup.sh wrote; fail loudly."""
    result = subprocess.run(
        [str(PODMAN), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n{output}")
    return result


def build_args() -> list[str]:
    """Options every build here needs: the host's network (the package registries) and,
    for TLS through this machine's intercepting proxy, its CA bundle mounted into the
    RUN steps, never copied into the image."""
    args = ["build", "--network=host"]
    if HOST_CA_BUNDLE.is_file():
        args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    return args


def inspect(image: str) -> dict:
    return json.loads(podman("image", "inspect", image).stdout)[0]


@pytest.fixture(scope="module")
def stand_in() -> str:
    """The stand-in base image's name (Debian trixie's python3 and tini)."""
    result = subprocess.run(
        [str(IMAGE_DIR / "podman-setup.sh")], capture_output=True, text=True, timeout=1500
    )
    if result.returncode != 0:
        pytest.fail(
            f"image/podman-setup.sh exited {result.returncode}:\n"
            + (result.stdout + result.stderr)[-6000:]
        )
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def base_image(stand_in: str) -> str:
    podman(
        *build_args(),
        "--build-arg", f"PYTHON_IMAGE={stand_in}",
        "--build-arg", f"PIP_CERT={HOST_CA_BUNDLE}",
        "--build-arg", f"HURRICANE_VERSION={PROJECT_VERSION}",
        "--tag", BASE_TAG,
        "--file", "Dockerfile",
        ".",
    )  # fmt: skip
    return BASE_TAG


@pytest.fixture(scope="module")
def demo_image(base_image: str) -> str:
    podman(
        *build_args(),
        "--build-arg", f"BASE_IMAGE={base_image}",
        "--tag", DEMO_TAG,
        "--file", "image/demo.Dockerfile",
        ".",
    )  # fmt: skip
    return DEMO_TAG


# -- running containers ---------------------------------------------------------------------


@dataclass
class Container:
    name: str
    app_url: str
    probe_url: str

    def state(self) -> dict:
        return json.loads(podman("inspect", self.name).stdout)[0]["State"]

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.probe_url + "/startup", timeout=2).status_code == 200:
                    return
            if not self.state()["Running"]:
                pytest.fail(f"container {self.name} exited:\n{self.logs()}")
            time.sleep(0.2)
        pytest.fail(f"container {self.name} did not start in {timeout} s:\n{self.logs()}")


def published(name: str, port: int) -> str:
    # "127.0.0.1:41234"
    return "http://" + podman("port", name, f"{port}/tcp").stdout.strip().splitlines()[0]


@contextlib.contextmanager
def container(image: str, *options: str, env: dict[str, str] | None = None) -> Iterator[Container]:
    """A detached container as Kubernetes runs it: read-only root with a writable /tmp
    only, the app and probe ports published on loopback ports of the host."""
    name = f"hurricane-image-test-{time.monotonic_ns()}"
    env_options = [f"--env={key}={value}" for key, value in (env or {}).items()]
    podman(
        "run", "--detach", "--name", name,
        # podman's --read-only alone would also leave /run and /var/tmp writable
        "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp",
        "--publish", "127.0.0.1::8000", "--publish", "127.0.0.1::8001",
        *env_options, *options, image,
    )  # fmt: skip
    try:
        yield Container(name, published(name, 8000), published(name, 8001))
    finally:
        print(f"--- logs of {name} ---\n" + Container(name, "", "").logs())
        podman("rm", "--force", "--time", "0", name, check=False)


def process_tree(host_pid: int) -> list[tuple[int, list[str], int]]:
    """(pid, argv, real uid) of the container's PID 1 and of its children, as the
    host's /proc shows them."""
    children = Path(f"/proc/{host_pid}/task/{host_pid}/children").read_text().split()
    rows = []
    for pid in [host_pid, *map(int, children)]:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        uid_line = next(
            line
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Uid:")
        )
        rows.append((pid, [arg.decode() for arg in argv], int(uid_line.split()[1])))
    return rows


# -- the image ------------------------------------------------------------------------------


def test_demo_serves_on_a_read_only_root(demo_image: str) -> None:
    with container(demo_image) as demo:
        demo.wait_started()
        assert demo.state()["Running"]
        for probe in ("/startup", "/ready", "/alive"):
            assert requests.get(demo.probe_url + probe, timeout=5).status_code == 200, probe
        assert (
            "hurricane_http_requests_total"
            in requests.get(demo.probe_url + "/metrics", timeout=5).text
        )
        home = requests.get(demo.app_url + "/", timeout=5)
        assert home.status_code == 200 and "Hurricane demo" in home.text
        # The database was migrated at start, in /tmp.
        created = requests.post(demo.app_url + "/notes/", json={"text": "from a test"}, timeout=5)
        assert created.status_code == 201
        notes = requests.get(demo.app_url + "/notes/", timeout=5).json()["notes"]
        assert [note["text"] for note in notes] == ["from a test"]
        # Static files collected at build time, served by Hurricane.
        assert requests.get(demo.app_url + "/static/notes/style.css", timeout=5).ok
        inspected = json.loads(podman("inspect", demo.name).stdout)[0]
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True


def test_tini_is_pid_1_and_the_server_its_non_root_child(demo_image: str) -> None:
    with container(demo_image) as demo:
        demo.wait_started()
        host_pid = demo.state()["Pid"]
        (tini_pid, tini_argv, _), *children = process_tree(host_pid)
        assert Path(tini_argv[0]).name == "tini", tini_argv
        assert tini_argv[1:] == ["--", "hurricane-entrypoint", "serve"]
        # The entrypoint exec'd the server: no shell nor Python wrapper in between.
        assert len(children) == 1, children
        _, server_argv, server_uid = children[0]
        assert Path(server_argv[0]).name.startswith("python"), server_argv
        assert server_argv[1:] == ["manage.py", "serve"], server_argv
        assert server_uid == USER_ID
        # And from inside: PID 1 is tini.
        inside = podman("exec", demo.name, "cat", "/proc/1/comm").stdout.strip()
        assert inside == "tini"
        assert podman("exec", demo.name, "id", "-u").stdout.strip() == str(USER_ID)


def dap_request(address: str, command: str, arguments: dict, timeout: float = 30) -> dict:
    """Send one Debug Adapter Protocol request over TCP (``host:port``), as VS Code
    does, and return the adapter's response to it (events before it are skipped)."""
    host, port = address.rsplit(":", 1)
    message = json.dumps({"seq": 1, "type": "request", "command": command, "arguments": arguments})
    data = message.encode()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        received = b""
        while True:
            head, separator, rest = received.partition(b"\r\n\r\n")
            if separator:
                length = int(re.search(rb"Content-Length: (\d+)", head)[1])
                if len(rest) >= length:
                    reply = json.loads(rest[:length])
                    if reply.get("type") == "response" and reply.get("request_seq") == 1:
                        return reply
                    received = rest[length:]
                    continue
            chunk = sock.recv(65536)
            if not chunk:
                pytest.fail(f"the debug adapter closed the connection; received {received!r}")
            received += chunk


def test_debugpy_attaches_on_the_base_image(demo_image: str) -> None:
    """HURRICANE_DEBUGGER=true works on an image FROM the base: debugpy comes with the
    base (the demo adds only psycopg), and a client's DAP handshake gets its answer."""
    assert "debugpy" not in (ROOT / "image" / "demo.Dockerfile").read_text().split("RUN", 1)[1]
    with container(
        demo_image, "--publish", "127.0.0.1::5678", env={"HURRICANE_DEBUGGER": "true"}
    ) as running:
        running.wait_started()
        assert "Listening for debug clients at port 5678" in running.logs()
        debugger = published(running.name, 5678).removeprefix("http://")
        reply = dap_request(debugger, "initialize", {"clientID": "vscode", "adapterID": "debugpy"})
    assert reply["command"] == "initialize" and reply["success"] is True, reply
    assert reply["body"]["supportsConfigurationDoneRequest"] is True


def test_stop_drains_in_flight_requests_and_exits_0(base_image: str) -> None:
    """The base image serving a project mounted at /app (the tests' project, for its
    slow view): `podman stop` (SIGTERM to tini, forwarded) lets requests in flight
    finish, and the container exits 0 well within the grace period."""
    grace = 30
    env = {"TEST_SQLITE": "/tmp/test.sqlite3", "HURRICANE_COMMANDS": "migrate"}
    mount = f"--volume={TEST_PROJECT}:/app:ro"
    with container(base_image, mount, env=env) as server:
        server.wait_started()
        slow = server.app_url + "/slow/?seconds=3"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            in_flight = [pool.submit(requests.get, slow, timeout=30) for _ in range(3)]
            deadline = time.monotonic() + 10
            metrics = ""
            while time.monotonic() < deadline:
                metrics = requests.get(server.probe_url + "/metrics", timeout=5).text
                if re.search(r"^hurricane_http_requests_in_flight 3\.0$", metrics, re.M):
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"the slow requests never were in flight:\n{metrics}")
            started = time.monotonic()
            podman("stop", "--time", str(grace), server.name)
            stopped_after = time.monotonic() - started
            answers = [future.result() for future in in_flight]
        assert [(answer.status_code, answer.text) for answer in answers] == [(200, "slept 3.0")] * 3
        state = server.state()
        assert state["ExitCode"] == 0, server.logs()
        assert stopped_after < grace - 5, f"stop took {stopped_after:.1f} s"
        assert "SIGTERM" in server.logs()


def test_image_configuration(base_image: str) -> None:
    config = inspect(base_image)["Config"]
    assert config["User"] == f"{USER_ID}:{USER_ID}"
    assert config["Entrypoint"] == ["tini", "--", "hurricane-entrypoint"]
    assert config["Cmd"] == ["serve"]
    assert config["WorkingDir"] == "/app"
    assert set(config["ExposedPorts"]) == {"8000/tcp", "8001/tcp"}
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/opt/hurricane/bin:")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == PROJECT_VERSION
    # REVISION and CREATED are left at their defaults here: buildah 1.28 keys its layer
    # cache on a LABEL's text, not on the ARG values in it, so a cached build would
    # keep an old revision (buildx does not). test_bake checks that bake passes them.
    assert labels["org.opencontainers.image.revision"]
    assert labels["org.opencontainers.image.created"]
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert "PIP_CERT" not in env


LEFTOVERS_SCRIPT = r"""
import glob, json, os, shutil
places = ["/app", "/opt", "/root", "/tmp", "/usr/local", "/var/tmp", "/wheels", "/src"]
found = {
    "compilers": [c for c in ("cc", "gcc", "c++", "g++", "clang", "make") if shutil.which(c)],
    "build folders": [p for p in ("/wheels", "/src", "/opt/build") if os.path.exists(p)],
    "files in /app, /tmp, /var/tmp": sorted(
        glob.glob("/app/*") + glob.glob("/tmp/*") + glob.glob("/var/tmp/*")
    ),
    "caches": [
        path for place in places for path in glob.glob(place + "/**/.cache", recursive=True)
    ] + [p for p in glob.glob("/var/cache/apt/*.bin")],
    "apt lists": [
        p for p in glob.glob("/var/lib/apt/lists/*")
        if os.path.basename(p) not in ("lock", "partial")
    ],
    "wheels": [
        path for place in places for path in glob.glob(place + "/**/*.whl", recursive=True)
    ],
    "pip.conf": [p for p in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf") if os.path.exists(p)],
}
print(json.dumps(found))
"""


def test_image_carries_no_compiler_cache_or_build_file(base_image: str, stand_in: str) -> None:
    result = podman(
        "run", "--rm", "--user", "0", "--entrypoint", "python3",
        base_image, "-c", LEFTOVERS_SCRIPT,
    )  # fmt: skip
    found = json.loads(result.stdout)
    assert found == {key: [] for key in found}
    size_above_base = inspect(base_image)["Size"] - inspect(stand_in)["Size"]
    print(f"image size above its base: {size_above_base / 1e6:.1f} MB")
    assert 0 < size_above_base < MAX_SIZE_ABOVE_BASE


def docs_dockerfile_block(first_line: str) -> str:
    """The ```dockerfile block of docs/image.md that starts with ``first_line``."""
    match = re.search(
        r"```dockerfile\n(" + re.escape(first_line) + r".*?)```",
        (ROOT / "docs" / "image.md").read_text(),
        re.S,
    )
    if match:
        return match.group(1)
    pytest.fail(f"no ```dockerfile block starting {first_line!r} in docs/image.md")


def users_dockerfile() -> str:
    """The user's Dockerfile that docs/image.md shows."""
    return docs_dockerfile_block("FROM blueshoe/hurricane:")


def test_users_short_dockerfile_installs_requirements_as_non_root(
    base_image: str, tmp_path: Path
) -> None:
    """The Dockerfile of docs/image.md, on the demo project with one more requirement: its
    `RUN pip install` runs as the image's non-root user and the result serves. With
    the page's lines that compile the project at build time appended: the compiled
    files are there, and the server still runs as the image's user."""
    dockerfile = users_dockerfile()
    assert len(dockerfile.splitlines()) <= 5, "the user's Dockerfile stays short"
    assert f"```dockerfile\n{dockerfile}```" in (ROOT / "README.md").read_text(), "the same"
    dockerfile += docs_dockerfile_block("USER root\nRUN python -m compileall")
    context = tmp_path / "project"
    local_files = shutil.ignore_patterns("__pycache__", "*.sqlite3", "staticfiles")
    shutil.copytree(DEMO_PROJECT, context, ignore=local_files)
    (context / "requirements.txt").write_text("six\n")
    (context / "Dockerfile").write_text(
        re.sub(r"^FROM \S+", f"FROM {base_image}", dockerfile, flags=re.M)
    )
    # pip in that RUN reaches the registry through this machine's TLS proxy, with its
    # CA bundle as the build secret the page documents.
    podman(
        "build", "--network=host", "--secret", f"id=pip-ca,src={HOST_CA_BUNDLE}",
        "--tag", USER_TAG, str(context),
    )  # fmt: skip
    # the secret was there for the install only
    assert "pip-ca" not in podman("run", "--rm", USER_TAG, "ls", "-a", "/run").stdout
    assert inspect(USER_TAG)["Config"]["User"] == f"{USER_ID}:{USER_ID}"
    owner = podman(
        "run", "--rm", USER_TAG, "python", "-c",
        "import os, six; print(os.stat(six.__file__).st_uid)",
    ).stdout.split()[-1]  # fmt: skip
    assert owner == str(USER_ID), "installed by the image's user, not root"
    compiled = podman("run", "--rm", USER_TAG, "ls", "/app/demo/__pycache__").stdout
    assert "settings.cpython-3" in compiled, compiled
    env = {"DEMO_DATABASE": "/tmp/demo.sqlite3", "HURRICANE_COMMANDS": "migrate"}
    with container(USER_TAG, env=env) as project:
        project.wait_started()
        assert requests.get(project.app_url + "/notes/", timeout=5).json() == {"notes": []}


STARTER_TAG = "localhost/hurricane-starter:image-test"


def test_the_starter_project_builds_and_runs_on_postgresql(base_image: str, tmp_path: Path) -> None:
    """`django-admin startproject --template starter`, its own Dockerfile built behind
    this machine's TLS proxy with the CA bundle as a build secret (as the Dockerfile
    says), then run through the entrypoint on the host's PostgreSQL: migrations
    applied, the admin and its static files served. Local files the .dockerignore
    names stay out of the image, and the CA bundle is in no layer."""
    project = tmp_path / "mysite"
    project.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "--template", "starter", "mysite",
         str(project)],
        cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (project / "db.sqlite3").write_text("a developer's local database")
    (project / "secret-key").write_text("a developer's local key")
    podman(
        "build", "--network=host",
        "--secret", f"id=pip-ca,src={HOST_CA_BUNDLE}",
        "--build-arg", f"HURRICANE_IMAGE={base_image}",
        "--tag", STARTER_TAG, str(project),
    )  # fmt: skip
    files = podman("run", "--rm", "--entrypoint", "", STARTER_TAG, "ls", "-a", "/app").stdout
    assert "manage.py" in files and "staticfiles" in files
    assert "db.sqlite3" not in files and "secret-key" not in files and "deploy" not in files
    # the bundle was mounted for the install only
    found = podman(
        "run", "--rm", "--entrypoint", "", STARTER_TAG, "sh", "-c",
        "ls /run/secrets 2>/dev/null; pip config list",
    ).stdout  # fmt: skip
    assert "pip-ca" not in found and "cert" not in found

    port, probe_port = free_port(), free_port()
    secret = tmp_path / "secret-key"
    secret.write_text("a-long-random-secret\n")
    with postgres_database() as database:
        name = f"hurricane-starter-test-{time.monotonic_ns()}"
        podman(
            "run", "--detach", "--name", name, "--network=host",
            "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp",
            "--volume", f"{secret}:/run/secrets/secret-key:ro",
            "--env", "DJANGO_SECRET_KEY_FILE=/run/secrets/secret-key",
            "--env", f"DJANGO_DATABASE_URL=postgres://postgres@127.0.0.1:5432/{database}",
            "--env", "DJANGO_ALLOWED_HOSTS=127.0.0.1",
            "--env", "HURRICANE_CHECK_MIGRATIONS=apply",
            "--env", f"HURRICANE_PORT={port}",
            "--env", f"HURRICANE_PROBE_PORT={probe_port}",
            STARTER_TAG,
        )  # fmt: skip
        running = Container(name, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{probe_port}")
        try:
            running.wait_started(timeout=120)
            login = requests.get(running.app_url + "/admin/login/", timeout=5)
            assert login.status_code == 200 and "Django administration" in login.text
            css = requests.get(running.app_url + "/static/admin/css/base.css", timeout=5)
            assert css.status_code == 200
            assert "a-long-random-secret" not in running.logs()
        finally:
            print(f"--- logs of {name} ---\n" + running.logs())
            podman("rm", "--force", "--time", "0", name, check=False)


def test_one_command_builds_and_smoke_tests_the_image(base_image: str) -> None:
    """image/build, as a developer runs it here: a short summary, ending with the image,
    its size and what the smoke test saw (base_image first: the layers are cached)."""
    result = subprocess.run(
        [str(IMAGE_DIR / "build"), "--tag", "localhost/hurricane:build-test"],
        capture_output=True, text=True, timeout=1500, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) < 20 and result.stderr == "", result.stdout + result.stderr
    assert all(line.startswith("image/build: ") for line in lines)
    out = result.stdout
    version = re.escape(PROJECT_VERSION)
    assert re.search(
        rf"^image/build: image: localhost/hurricane:build-test \(Hurricane {version}, "
        r"Python 3\.\d+, on localhost/hurricane-stand-in:trixie-v\d+\)$",
        out, re.M,
    )  # fmt: skip
    assert re.search(r"^image/build: size: \d+ MB, \d+ MB above its base$", out, re.M)
    assert re.search(
        r"smoke test: packages: django-hurricane \S+ Django \S+ tornado .* debugpy ", out
    )
    assert "image/build: smoke test: user: uid 10001" in out
    assert re.search(r"smoke test: startup probe: 200 after [\d.]+ s", out)
    assert 'smoke test: app: GET /notes/ answered 200 {"notes": []}' in out
    assert "smoke test: stop: drained and exited 0" in out


def test_image_build_says_what_to_do_for_a_python_it_cannot_have(stand_in: str) -> None:
    """No registry here: a Python other than the stand-in's is one line and exit 1."""
    stand_in_python = subprocess.run(
        [str(PODMAN), "run", "--rm", "--entrypoint", "python3", stand_in, "-c",
         "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.strip()  # fmt: skip
    other = "3.12" if stand_in_python != "3.12" else "3.11"
    result = subprocess.run(
        [str(IMAGE_DIR / "build"), "--python", other],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        f"image/build: FAILED: python:{other}-slim-trixie cannot be pulled here, and the "
        f"stand-in base has Python {stand_in_python}: pass --python {stand_in_python}, "
        "or --base IMAGE"
    )


CELERY_TAG = "localhost/hurricane-celery:image-test"


def test_celery_worker_and_beat_modes_run_from_the_image_with_their_probes(
    base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entrypoint's `celery-worker` and `celery-beat` modes, in an image built as
    docs/image.md says with Celery in the project's requirements: the worker starts,
    is ready, runs a task sent from outside over the host's RabbitMQ and stores its
    result in Redis; beat starts and is ready; each exits 0 when stopped (SIGTERM)."""
    import celery as celery_package

    context = tmp_path / "project"
    shutil.copytree(
        TEST_PROJECT, context, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3")
    )
    (context / "requirements.txt").write_text(f"celery[redis]=={celery_package.__version__}\n")
    (context / "Dockerfile").write_text(
        re.sub(r"^FROM \S+", f"FROM {base_image}", users_dockerfile(), flags=re.M)
    )
    podman(
        "build", "--network=host", "--secret", f"id=pip-ca,src={HOST_CA_BUNDLE}",
        "--tag", CELERY_TAG, str(context),
    )  # fmt: skip

    tag = f"{time.monotonic_ns()}"
    queue = f"hurricane-image-celery-{tag}"
    env = {
        "HURRICANE_CELERY_APP": "testapp.celery_app:app",
        "TEST_CELERY_QUEUE": queue,
        "TEST_CELERY_APP_NAME": f"hurricane-image-{tag}",
        "TEST_CELERY_BACKEND": "redis://127.0.0.1:6379/5",
        "TEST_SQLITE": "/tmp/test.sqlite3",
    }

    @contextlib.contextmanager
    def celery_container(*command: str) -> Iterator[Container]:
        probe_port = free_port()
        name = f"hurricane-image-celery-{time.monotonic_ns()}"
        podman(
            "run", "--detach", "--name", name, "--network=host",
            "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp",
            *(f"--env={key}={value}" for key, value in env.items()),
            f"--env=HURRICANE_PROBE_PORT={probe_port}",
            CELERY_TAG, *command,
        )  # fmt: skip
        running = Container(name, "", f"http://127.0.0.1:{probe_port}")
        try:
            yield running
        finally:
            print(f"--- logs of {name} ---\n" + running.logs())
            podman("rm", "--force", "--time", "0", name, check=False)

    def wait_ready(running: Container) -> None:
        running.wait_started(timeout=90)
        deadline = time.monotonic() + 30
        while requests.get(running.probe_url + "/ready", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                pytest.fail(f"{running.name} not ready in 30 s:\n{running.logs()}")
            time.sleep(0.2)

    def stop(running: Container) -> None:
        podman("stop", "--time", "30", running.name)
        state = running.state()
        assert (state["Running"], state["ExitCode"]) == (False, 0), running.logs()

    monkeypatch.syspath_prepend(str(TEST_PROJECT))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "testproject.settings")
    from testapp.celery_app import app

    app.conf.task_default_queue = queue
    app.conf.result_backend = env["TEST_CELERY_BACKEND"]
    try:
        with celery_container("celery-worker", "--loglevel", "INFO", "-c", "1") as worker:
            wait_ready(worker)
            assert app.tasks["testapp.celery_app.add"].delay(2, 3).get(timeout=30) == 5
            metrics = requests.get(worker.probe_url + "/metrics", timeout=5).text
            succeeded = (
                "hurricane_celery_tasks_finished_total"
                '{outcome="succeeded",task="testapp.celery_app.add"} 1.0'
            )
            assert succeeded in metrics, metrics
            stop(worker)
        with celery_container(
            "celery-beat", "--loglevel", "INFO", "-s", "/tmp/schedule", "--max-interval", "1"
        ) as beat:
            wait_ready(beat)
            assert requests.get(beat.probe_url + "/alive", timeout=5).status_code == 200
            stop(beat)
    finally:
        delete_celery_queue(queue)
