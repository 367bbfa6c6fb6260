"""The README documents every option of serve and consume, with its variable, and
every part of the Kubernetes manifests."""

from conftest import ROOT
from hurricane.options import CONSUME_OPTIONS, SERVE_OPTIONS


def test_readme_documents_every_option():
    readme = (ROOT / "README.md").read_text()
    options = {o.name: o for o in (*SERVE_OPTIONS, *CONSUME_OPTIONS)}.values()
    missing = [o.flag for o in options if f"`{o.flag}" not in readme]
    missing += [o.variable for o in options if f"`{o.variable}`" not in readme]
    assert not missing


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = ci.strip().splitlines()[-1]
    assert command in readme


def test_documented_module_paths_import():
    import importlib

    for name in (
        "hurricane.management.commands.serve",
        "hurricane.management.commands.consume",
        "hurricane.amqp.basehandler",
        "hurricane.amqp.worker",
        "hurricane.server.django",
        "hurricane.server.wsgi",
        "hurricane.metrics.base",
        "hurricane.metrics.registry",
        "hurricane.metrics.requests",
        "hurricane.metrics.exceptions",
        "hurricane.webhooks.base",
        "hurricane.webhooks.registry",
        "hurricane.webhooks.webhook_types",
        "hurricane.webhooks.exceptions",
    ):
        importlib.import_module(name)


def test_readme_explains_every_part_of_the_manifests():
    readme = (ROOT / "README.md").read_text()
    manifests = ROOT / "k8s-manifests"
    parts = [manifests / "base"] + sorted((manifests / "components").iterdir())
    parts += sorted((manifests / "overlays").iterdir())
    for part in parts:
        assert f"`{part.relative_to(manifests)}/`" in readme, part
    assert "python scripts/check_manifests.py" in readme
    assert "kubectl apply -k k8s-manifests" in readme
