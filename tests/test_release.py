"""The release workflow (.github/workflows/image.yml), checked without GitHub by
scripts/check_workflows.py: actionlint and the GitHub workflow schema, each shown to
catch what it is there for on a broken fixture (tests/workflows/broken/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / "tests" / "workflows" / "broken"
WORKFLOW = ROOT / ".github" / "workflows" / "image.yml"


def check(*files: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/check_workflows.py", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_workflows_pass_actionlint_and_the_schema() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok   actionlint .github/workflows/image.yml" in result.stdout
    assert "ok   schema .github/workflows/image.yml" in result.stdout


def test_actionlint_catches_an_undefined_property_the_schema_lets_through() -> None:
    result = check("tests/workflows/broken/undefined-context.yml")
    assert result.returncode == 1
    assert "FAIL actionlint tests/workflows/broken/undefined-context.yml" in result.stdout
    assert 'property "tag" is not defined in object type' in result.stdout
    assert "ok   schema tests/workflows/broken/undefined-context.yml" in result.stdout


def test_both_catch_a_misspelt_key() -> None:
    result = check("tests/workflows/broken/misspelt-key.yml")
    assert result.returncode == 1
    assert 'unexpected key "runs_on" for "job" section' in result.stdout
    assert "FAIL schema tests/workflows/broken/misspelt-key.yml" in result.stdout
    assert "'runs-on' is a required property" in result.stdout


def test_a_release_pushes_signs_and_checks_its_tag() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key "on" as true
    assert triggers["push"] == {"tags": ["v*"]}
    assert "pull_request" in triggers
    assert workflow["permissions"] == {"contents": "read"}
    release = workflow["jobs"]["release"]
    # keyless signing needs the OIDC token; nothing else is granted
    assert release["permissions"] == {"contents": "read", "id-token": "write"}
    steps = release["steps"]
    uses = [step.get("uses", "") for step in steps]
    assert any(name.startswith("sigstore/cosign-installer@") for name in uses)
    bake = next(step for step in steps if step.get("id") == "bake")
    assert bake["with"] == {"source": ".", "targets": "release", "push": True}
    runs = "\n".join(step.get("run", "") for step in steps)
    assert 'cosign sign --yes "$ref"' in runs
    assert '"$version" != "$package"' in runs  # the tag must be pyproject.toml's version
    # a pull request builds the same targets and pushes nothing
    build = workflow["jobs"]["build"]["steps"][-1]
    assert build["with"] == {"source": ".", "targets": "release", "push": False}
