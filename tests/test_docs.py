"""The README documents every option of serve and consume, with its variable, and
every part of the Kubernetes manifests; its demo command does what it says."""

import re
import shlex

import requests

from conftest import DEMO_PROJECT, ROOT, wait_until
from hurricane.options import CONSUME_OPTIONS, SERVE_OPTIONS


def readme_demo_arguments() -> list[str]:
    """The arguments of ``manage.py serve`` in the README's demo command."""
    readme = (ROOT / "README.md").read_text()
    command = re.search(
        r"```sh\n(pip install -e \. && python examples/demo/manage.py .*)\n", readme
    )
    assert command, "the README's demo command"
    words = shlex.split(command.group(1))
    return words[words.index("serve") + 1 :]


def test_the_readme_demo_command_serves_what_the_readme_says(serve, tmp_path):
    """Run as the README runs it (the ports moved to free ones, the database and the
    collected files in tmp): the migrations applied by ``--command migrate``, the
    probes and metrics one port up, notes listed and added, the stylesheet served,
    and a body that is not a note a 400 that says why."""
    server = serve(
        *readme_demo_arguments(),
        cwd=DEMO_PROJECT,
        migrate=False,
        wait=False,
        env={
            "DEMO_DATABASE": str(tmp_path / "demo.sqlite3"),
            "DEMO_STATIC_ROOT": str(tmp_path / "static"),
        },
    )
    wait_until(
        lambda: requests.get(server.probe("/ready"), timeout=2).text.strip() == "ready",
        60,
        "ready",
        server,
    )
    assert requests.get(server.url("/notes/"), timeout=5).json() == {"notes": []}
    added = requests.post(server.url("/notes/"), data='{"text": "hi"}', timeout=5)
    assert added.status_code == 201 and added.json()["text"] == "hi"
    assert [n["text"] for n in requests.get(server.url("/notes/"), timeout=5).json()["notes"]] == [
        "hi"
    ]
    assert "hurricane_http_requests_total" in requests.get(server.probe("/metrics"), timeout=5).text
    assert requests.get(server.url("/static/notes/style.css"), timeout=5).status_code == 200
    for body in (b"not json", b"[1]", b'{"text": 5}', b"\xff"):
        refused = requests.post(server.url("/notes/"), data=body, timeout=5)
        assert refused.status_code == 400, body
        assert "the body must be" in refused.json()["error"]
    assert len(requests.get(server.url("/notes/"), timeout=5).json()["notes"]) == 1


def test_readme_documents_every_option():
    readme = (ROOT / "README.md").read_text()
    options = {o.name: o for o in (*SERVE_OPTIONS, *CONSUME_OPTIONS)}.values()
    missing = [o.flag for o in options if f"`{o.flag}" not in readme]
    missing += [o.variable for o in options if f"`{o.variable}`" not in readme]
    assert not missing


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but hyphens dropped,
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_readme_leads_to_a_heading():
    readme = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    anchors = {heading_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", readme, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", readme)
    assert links
    assert [link for link in links if link not in anchors] == []


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
