"""Webhooks as a receiver and an operator see them: the timed signature verified by
the code of docs/webhooks.md, what the log shows of the receiver's URL, drops logged once
per burst, the webhooks of a drain and of a start-up held up by the database, and
django-hurricane 1.6's webhook classes. Real ``manage.py serve``/``consume``
processes, a real HTTP receiver, the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import requests
from support.tcp_proxy import TcpProxy
from test_metrics_webhooks import SECRET, expected_signature, receiver

from conftest import ROOT, TEST_PROJECT, base_env, consumer_args, postgres_database, wait_until

TIMED_SIGNATURE_HEADER = "x-hurricane-timed-signature"
# The queue of webhooks waiting for the receiver holds this many, as docs/webhooks.md says.
QUEUED = 100


def docs_verify() -> Callable[..., bool]:
    """The ``verify`` function of docs/webhooks.md, run as a receiver would paste it."""
    page = (ROOT / "docs" / "webhooks.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "def verify(" in b]
    assert len(blocks) == 1, "one verify example in docs/webhooks.md"
    namespace: dict = {}
    exec(compile(blocks[0], "docs/webhooks.md", "exec"), namespace)
    return namespace["verify"]


def test_timed_signature_verifies_with_the_documented_code_and_goes_stale(serve):
    verify = docs_verify()
    with receiver() as hooks:
        # Where chat services keep their credential: the path; others: user part, query.
        host = hooks.url.removesuffix("/hook").removeprefix("http://")
        url = f"http://hookuser:hookpassword@{host}/services/T0/B0/PATHCREDENTIAL?token=QUERYTOKEN"
        server = serve("--webhook-url", url, env={"HURRICANE_WEBHOOK_SECRET": SECRET})
        hooks.wait_for_count(("startup", "succeeded"), 1, server)
        delivery = hooks.deliveries[0]
        header = delivery.headers[TIMED_SIGNATURE_HEADER]
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header), header
        sent = int(header[2:].split(",")[0])
        assert abs(time.time() - sent) < 60

        assert verify(SECRET.encode(), delivery.body, header) is True
        # What a receiver written for the body-only signature checks is still there.
        assert delivery.headers["x-hurricane-signature"] == expected_signature(delivery.body)
        # Anything changed does not verify: the body, the time, the secret; no header.
        assert verify(SECRET.encode(), delivery.body + b" ", header) is False
        later = header.replace(f"t={sent}", f"t={sent + 1}")
        assert verify(SECRET.encode(), delivery.body, later) is False
        assert verify(b"another secret", delivery.body, header) is False
        assert verify(SECRET.encode(), delivery.body, "") is False
        assert verify(SECRET.encode(), delivery.body, "t=soon,v1=00") is False

        # The same delivery replayed later: refused once older than the tolerance.
        time.sleep(2.1)
        assert verify(SECRET.encode(), delivery.body, header, tolerance_seconds=1) is False
        assert verify(SECRET.encode(), delivery.body, header, tolerance_seconds=60) is True

        wait_until(lambda: "Webhook startup sent to" in server.output, 10, "the log line", server)
    line = next(line for line in server.output.splitlines() if "Webhook startup sent to" in line)
    shown = f"http://*****@{host}/services/*****/*****/*****?*****"
    assert line.endswith(f"Webhook startup sent to {shown}"), line
    for secret in ("PATHCREDENTIAL", "QUERYTOKEN", "hookpassword", "hookuser", "/T0", "/B0"):
        assert secret not in server.output, secret


def test_drops_are_logged_once_per_burst_with_their_count(serve, tmp_path):
    """The receiver holds the startup webhook while the readiness probe flaps: the
    queue fills, the rest is dropped; one line counts them once the queue has room."""
    flag = tmp_path / "readiness-fails"
    hold = threading.Event()
    changes = QUEUED + 50
    with receiver(hold=hold) as hooks:
        server = serve("--webhook-url", hooks.url, env={"TEST_READINESS_FAIL_FLAG": str(flag)})
        wait_until(lambda: hooks.deliveries, 20, "the startup webhook to arrive", server)
        # Readiness starts failing: each answer below is a change, and a webhook.
        for change in range(changes):
            ready = change % 2 == 0
            if ready:
                flag.unlink(missing_ok=True)
            else:
                flag.touch()
            status = requests.get(server.probe("/ready"), timeout=10).status_code
            assert status == (200 if ready else 400), (change, status)
        assert "Dropped" not in server.output  # not before the burst is over
        hold.set()
        hooks.wait_for_count(("readiness", "succeeded"), QUEUED // 2, server)
        hooks.wait_for_count(("readiness", "failed"), QUEUED // 2, server)
        wait_until(lambda: "Dropped" in server.output, 10, "the drops to be logged", server)
        time.sleep(1.0)  # a line per drop, if it came, would be here by now
    readiness = [kind for kind in hooks.kinds() if kind[0] == "readiness"]
    assert len(readiness) == QUEUED, hooks.kinds()
    dropped = [line for line in server.output.splitlines() if "dropped" in line.lower()]
    assert len(dropped) == 1, dropped
    assert dropped[0].endswith(
        f"WARNING hurricane.webhooks Dropped 50 webhooks (readiness: 50) while {QUEUED} "
        "waited for the receiver"
    ), dropped


def test_verify_example_is_the_documented_procedure():
    """The code of docs/webhooks.md, alone: a signature made as documented (with the secret,
    "<t>." and the body) verifies while fresh, and not once stale."""
    import hashlib
    import hmac

    verify = docs_verify()
    body = json.dumps({"type": "startup"}).encode()

    def header(sent: int) -> str:
        signed = f"{sent}.".encode() + body
        return f"t={sent},v1=" + hmac.new(b"k", signed, hashlib.sha256).hexdigest()

    now = int(time.time())
    assert verify(b"k", body, header(now)) is True
    assert verify(b"k", body, header(now - 301)) is False
    assert verify(b"k", body, header(now + 301)) is False
    assert verify(b"k", body, header(now - 200)) is True


def test_sigterm_sends_the_draining_readiness_webhook_with_nobody_polling(serve):
    """No probe is asked at all: the drain itself is the change, and its webhook is
    delivered before the process exits."""
    with receiver() as hooks:
        server = serve("--webhook-url", hooks.url)
        hooks.wait_for_count(("startup", "succeeded"), 1, server)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0, server.output
        assert hooks.kinds() == [("startup", "succeeded"), ("readiness", "failed")]
        draining = hooks.deliveries[1].json
        assert draining["details"] == {"problems": ["draining"]}
        assert draining["info"] == "Readiness webhook"


def test_consume_sends_the_draining_readiness_webhook_on_sigterm(consume, broker):
    names = broker.names()
    with receiver() as hooks:
        process = consume(*consumer_args(names, "--webhook-url", hooks.url))
        hooks.wait_for_count(("startup", "succeeded"), 1, process)
        assert requests.get(process.probe("/ready"), timeout=10).status_code == 200
        hooks.wait_for_count(("readiness", "succeeded"), 1, process)
        process.signal(signal.SIGTERM)
        assert process.wait_exit(30) == 0, process.output
        assert hooks.kinds() == [
            ("startup", "succeeded"),
            ("readiness", "succeeded"),
            ("readiness", "failed"),
        ]
        assert hooks.deliveries[2].json["details"] == {"problems": ["draining"]}


def test_the_first_failing_readiness_answer_sends_failed(serve, tmp_path):
    flag = tmp_path / "readiness-fails"
    with receiver() as hooks:
        server = serve("--webhook-url", hooks.url, env={"TEST_READINESS_FAIL_FLAG": str(flag)})
        flag.touch()  # not before: it would fail the system checks of the start
        assert requests.get(server.probe("/ready"), timeout=10).status_code == 400
        hooks.wait_for_count(("readiness", "failed"), 1, server)
        problems = hooks.deliveries[-1].json["details"]["problems"]
        assert any("readiness flag" in problem for problem in problems), problems


def test_a_database_that_does_not_answer_at_start_up_sends_one_warning(serve):
    """--check-migrations-apply against a PostgreSQL behind a proxy that refuses: the
    start-up waits, says so once with a "warning" startup webhook (1.6's status and
    log line), and sends "succeeded" once the database answers."""
    proxy = TcpProxy(5432)
    proxy.refuse()
    try:
        with postgres_database() as database, receiver() as hooks:
            env = {"TEST_POSTGRES_DB": database, "TEST_POSTGRES_PORT": str(proxy.port)}
            server = serve(
                "--check-migrations-apply", "--webhook-url", hooks.url,
                env=env, migrate=False, wait=False,
            )  # fmt: skip
            hooks.wait_for_count(("startup", "warning"), 1, server)
            warning = hooks.deliveries[0].json
            assert warning["info"] == "Startup webhook"
            assert "OperationalError" in warning["traceback"], warning
            # More looks at the database fail meanwhile (one a second): no more webhooks.
            time.sleep(3.5)
            assert hooks.kinds() == [("startup", "warning")]
            proxy.resume()
            server.wait_started(timeout=60)
            hooks.wait_for_count(("startup", "succeeded"), 1, server)
            assert hooks.kinds() == [("startup", "warning"), ("startup", "succeeded")]
            lines = [line for line in server.output.splitlines() if "Webhook with a status" in line]
            assert len(lines) == 1 and lines[0].endswith(
                "INFO hurricane.server.general Webhook with a status warning has been initiated"
            ), lines
            server.kill()
    finally:
        proxy.close()


WEBHOOK_CLASSES_SCRIPT = """
import sys
import django
django.setup()
from hurricane.webhooks import webhook_registry
from hurricane.webhooks.base import Webhook, WebhookStatus
from hurricane.webhooks.exceptions import WebhookCodeAlreadyRegistered
from hurricane.webhooks.webhook_types import StartupWebhook

class DeployedWebhook(Webhook):
    code = "deployed"

    def __init__(self):
        super().__init__()
        self.data = {"info": "Deployed webhook", "type": self.code, "release": "r42"}

print("code", Webhook(code="new_webhook").code)
startup = StartupWebhook.get_from_registry()
print("startup from registry", startup is webhook_registry.get("startup"))
webhook_registry.register(DeployedWebhook)
try:
    webhook_registry.register(DeployedWebhook)
except WebhookCodeAlreadyRegistered as error:
    print("twice:", error)
webhook = DeployedWebhook.get_from_registry()
print("without url", webhook.run(None, WebhookStatus.SUCCEEDED).result(timeout=5))
print("delivered", webhook.run(sys.argv[1], WebhookStatus.FAILED, "Traceback: boom").result(30))
webhook_registry.unregister(DeployedWebhook)
webhook_registry.unregister(DeployedWebhook)
print("unregistered", "deployed" not in webhook_registry.webhooks)
"""


def test_django_hurricane_1_6_webhook_classes_send_their_payload(tmp_path):
    """The webhook API of django-hurricane 1.6, used from a script of the project, to
    a real receiver: a subclass that sets ``data`` in ``__init__``,
    ``Webhook(code=...)``, ``get_from_registry()``, ``webhook_registry.unregister``
    (twice: the second does nothing) and a run without URL (sends nothing)."""
    env = base_env(tmp_path, DJANGO_SETTINGS_MODULE="testproject.settings")
    with receiver() as hooks:
        result = subprocess.run(
            [sys.executable, "-c", WEBHOOK_CLASSES_SCRIPT, hooks.url],
            cwd=TEST_PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines() == [
            "code new_webhook",
            "startup from registry True",
            "twice: Webhook Code (deployed) is already registered.",
            "without url False",
            "delivered True",
            "unregistered True",
        ], result.stdout + result.stderr
        assert len(hooks.deliveries) == 1
        payload = hooks.deliveries[0].json
    assert payload["type"] == "deployed" and payload["release"] == "r42", payload
    assert payload["info"] == "Deployed webhook" and payload["status"] == "failed"
    assert payload["traceback"] == "Traceback: boom" and isinstance(payload["timestamp"], int)
