"""The documentation: README.md and the pages of docs/. docs/options.md, generated
from the option table, is up to date and documents every option of serve and consume
with its variable; docs/kubernetes.md explains every part of the manifests; every
relative link leads to a file and heading that exist; the README's demo command does
what it says, and its test command is the one CI runs."""

import re
import shlex
import subprocess
import sys

import requests

from conftest import DEMO_PROJECT, ROOT, wait_until
from hurricane.config.options import CONSUME_OPTIONS, SERVE_OPTIONS

DOCS = ROOT / "docs"


def readme_demo_arguments() -> list[str]:
    """The arguments of ``manage.py serve`` in the README's demo command."""
    readme = (ROOT / "README.md").read_text()
    command = re.search(
        r"```sh\n(pip install -e \. && python examples/demo/manage.py .*)\n", readme
    )
    assert command, "the README's demo command"
    words = shlex.split(command.group(1))
    return words[words.index("serve") + 1 :]


def test_the_quickstart_shows_the_readme_demo_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^pip install -e \. && python examples/demo/.*$", readme, re.M)
    assert command and command.group(0) in (DOCS / "quickstart.md").read_text()


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


def test_the_options_page_is_generated_from_the_option_table():
    """docs/options.md is what scripts/generate_options_doc.py writes from
    hurricane/config/options.py now: a changed option, default or help text without a run of
    the script fails here, with the command to run."""
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_options_doc.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_the_options_page_documents_every_option():
    page = (DOCS / "options.md").read_text()
    options = {o.name: o for o in (*SERVE_OPTIONS, *CONSUME_OPTIONS)}.values()
    missing = [o.flag for o in options if f"`{o.flag}" not in page]
    missing += [o.variable for o in options if f"`{o.variable}`" not in page]
    assert not missing


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but hyphens dropped,
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def without_code(text: str) -> str:
    """Markdown without its fenced blocks and inline code spans, where a ``#`` or a
    ``](`` is no heading and no link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors_of(path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated heading gets -1, -2, ...)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        anchor = heading_anchor(heading)
        number = 0
        while (anchor if number == 0 else f"{anchor}-{number}") in anchors:
            number += 1
        anchors.add(anchor if number == 0 else f"{anchor}-{number}")
    return anchors


DOCUMENTS = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_every_page_is_in_the_index():
    index = (DOCS / "index.md").read_text()
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "index.md"]
    assert [name for name in missing if f"]({name})" not in index] == []


def test_every_relative_link_leads_to_a_file_and_heading():
    """Every link of README.md and docs/*.md that is not a URL: its file exists (a
    folder too), and its #anchor is a heading of that file as GitHub names it."""
    broken = []
    links = 0
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", without_code(document.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:
            links += 1
            path, _, anchor = target.partition("#")
            file = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(ROOT)}: {target}"
            if not file.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and (file.suffix != ".md" or anchor not in anchors_of(file)):
                broken.append(f"{where} (no such heading)")
    assert links > 50
    assert broken == []


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


def test_the_kubernetes_page_explains_every_part_of_the_manifests():
    page = (DOCS / "kubernetes.md").read_text()
    manifests = ROOT / "k8s-manifests"
    parts = [manifests / "base"] + sorted((manifests / "components").iterdir())
    parts += sorted((manifests / "overlays").iterdir())
    for part in parts:
        assert f"`{part.relative_to(manifests)}/`" in page, part
    assert "python scripts/check_manifests.py" in page
    assert "kubectl apply -k k8s-manifests" in page
