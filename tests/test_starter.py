"""The starter template (starter/): `django-admin startproject --template starter NAME`
makes a project that reads its settings from the environment, serves through the
image's entrypoint on the real PostgreSQL, and deploys with an overlay that renders
and validates. Its image is built and run in tests/test_image.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from conftest import ROOT, entrypoint_env, free_port, postgres_database, run_entrypoint

sys.path.insert(0, str(ROOT / "scripts"))
import check_manifests  # noqa: E402

STARTER = ROOT / "starter"


@pytest.fixture
def postgres() -> Iterator[str]:
    with postgres_database() as name:
        yield name


def start_project(tmp_path: Path, name: str = "mysite") -> Path:
    """What a user runs; returns the project's folder."""
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "--template", str(STARTER), name],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return tmp_path / name


def project_env(tmp_path: Path, project: Path, **extra: str) -> dict[str, str]:
    env = entrypoint_env(tmp_path, HURRICANE_APP_DIR=str(project), **extra)
    env.pop("PYTHONPATH", None)  # the project imports only what is installed
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def test_startproject_makes_every_file_with_the_name_filled_in(tmp_path):
    project = start_project(tmp_path)
    for path in (
        "manage.py",
        "mysite/settings.py",
        "mysite/environment.py",
        "mysite/urls.py",
        "mysite/wsgi.py",
        "mysite/asgi.py",
        "requirements.txt",
        "Dockerfile",
        ".dockerignore",
        "README.md",
        "deploy/kustomization.yaml",
        "deploy/app.env",
    ):
        assert (project / path).is_file(), path
    settings = (project / "mysite" / "settings.py").read_text()
    assert 'ROOT_URLCONF = "mysite.urls"' in settings and "project_name" not in settings
    assert '"mysite.settings"' in (project / "manage.py").read_text()
    # what COPY . . must not bake into the image
    ignored = (project / ".dockerignore").read_text().splitlines()
    for entry in ("db.sqlite3*", "*.sqlite3", "secret-key", ".env", ".git", "deploy/"):
        assert entry in ignored, entry


def test_the_project_serves_on_postgresql_through_the_entrypoint(tmp_path, start, postgres):
    project = start_project(tmp_path)
    (tmp_path / "secret-key").write_text("a-long-random-secret-for-this-test\n")
    port, probe_port = free_port(), free_port()
    env = project_env(
        tmp_path,
        project,
        DJANGO_SECRET_KEY_FILE=str(tmp_path / "secret-key"),
        DJANGO_DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{postgres}",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        HURRICANE_PORT=str(port),
        HURRICANE_PROBE_PORT=str(probe_port),
        HURRICANE_CHECK_MIGRATIONS="apply",
        HURRICANE_COMMANDS="collectstatic --noinput",
        HURRICANE_STATIC="true",
    )
    server = start(["serve"], env)
    probe, app = f"http://127.0.0.1:{probe_port}", f"http://127.0.0.1:{port}"
    server.wait_for(
        lambda: requests.get(probe + "/startup", timeout=5).status_code == 200,
        "startup 200",
        timeout=90,
    )
    login = requests.get(app + "/admin/login/", timeout=5)
    assert login.status_code == 200 and "Django administration" in login.text
    assert requests.get(app + "/static/admin/css/base.css", timeout=5).status_code == 200
    # a host the settings do not list is refused
    assert requests.get(app + "/admin/login/", headers={"Host": "evil.example"}).status_code == 400
    # the migrations went to PostgreSQL
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={postgres}") as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM django_migrations WHERE app = 'auth'"
        ).fetchone()
    assert count > 0
    assert "a-long-random-secret" not in server.output
    assert server.terminate() == 0


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "DJANGO_SECRET_KEY is not set: set it, or DJANGO_SECRET_KEY_FILE"),
        (
            {"DJANGO_SECRET_KEY": "k", "DJANGO_DATABASE_URL": "oracle://db/x"},
            "DJANGO_DATABASE_URL has the scheme 'oracle'; expected one of",
        ),
        (
            {"DJANGO_SECRET_KEY": "k", "DJANGO_DEBUG": "sometimes"},
            "DJANGO_DEBUG='sometimes' is neither true nor false",
        ),
    ],
    ids=["no secret key", "unknown database", "bad debug flag"],
)
def test_a_missing_or_wrong_setting_stops_the_start_with_its_name(tmp_path, changes, expected):
    project = start_project(tmp_path)
    env = project_env(tmp_path, project, **changes)
    result = run_entrypoint(["serve", "--port", str(free_port())], env, tmp_path)
    assert result.returncode == 1
    assert expected in result.stderr


def test_the_overlay_renders_and_validates(tmp_path):
    """As its kustomization.yaml says: Hurricane's manifests copied beside it."""
    project = start_project(tmp_path)
    shutil.copytree(ROOT / "k8s-manifests", project / "deploy" / "hurricane")
    assert check_manifests.check_kustomization(project / "deploy") == []
    objects = check_manifests.parse(check_manifests.render(project / "deploy"))
    images = {
        container["image"]
        for item in objects
        if item["kind"] in ("Deployment", "Job")
        for container in item["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.com/myteam/myapp:0.1.0"}
    config = next(
        item for item in objects if item["metadata"]["name"].startswith("hurricane-app-config")
    )
    assert config["data"]["DJANGO_DATABASE_URL"].startswith("postgres://myapp@")
    web = next(item for item in objects if item["kind"] == "Deployment")
    env = {
        entry["name"]: entry.get("value")
        for entry in web["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["DJANGO_DATABASE_PASSWORD_FILE"] == "/run/secrets/hurricane/database-password"
    assert env["HURRICANE_FORBID_DEBUGGER"] == "true"
