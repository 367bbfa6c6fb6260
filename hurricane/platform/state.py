"""What the probes report, shared by ``serve`` and ``consume``: start-up, draining,
each probe's last answer, and the webhooks sent when an answer changes.

Each command's subclass says what "busy" and "used up" mean for it (requests
waiting for a worker, messages handled, ...), and which thread writes its own fields.

Two threads touch a ProbeState: the process's event loop (serve's app loop,
consume's loop) and the probe server's thread (hurricane.platform.probes.
ProbeServerThread), whose handlers read it and report each probe's answer:

- ``started``, ``draining``, ``held_up``: written on the event loop only, each by one
  assignment (a flag goes from False to True once); the probe thread reads them.
- ``probe_states`` and ``last_webhook``: written by both, the probe handlers
  (``report_liveness``/``report_readiness``) and the loop (``start_draining``, a
  consumer that loses its broker, the startup webhooks). ``lock`` guards them: a
  probe's answer is compared and recorded in one step, so that a change is logged
  and sent once, and a webhook is queued and recorded as the last one together, so
  that waiting for ``last_webhook`` waits for every webhook sent before it.
- the rest is set in ``__init__`` and only read after.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from hurricane.config.options import Options
from hurricane.metrics.requests import HealthMetric, ReadinessMetric, StartupTimeMetric
from hurricane.platform.probes import ProbeChecks
from hurricane.platform.process import wait_for_delivery
from hurricane.webhooks.base import WebhookStatus

logger = logging.getLogger("hurricane.server.general")


class ProbeState:
    #: What ``--max-lifetime`` counts, for the liveness answer.
    lifetime_unit = "requests"

    def __init__(self, options: Options) -> None:
        self.options = options
        self.max_lifetime: int | None = options.max_lifetime
        self.req_queue_len: int = options.req_queue_len
        self.metrics_enabled = not options.no_metrics
        self.webhook_url: str | None = options.webhook_url
        self.webhook_secret: str | None = options.webhook_secret
        self.started = False
        self.draining = False
        self.checks = ProbeChecks()
        # Set by the subclass when metrics are on: an object with ``render()`` and
        # ``mark_started()`` (see hurricane.metrics.exposition.ProcessMetrics).
        self.metrics: Any = None
        # Each probe's last answer; None until its first, which is always a change (as
        # in django-hurricane 1.6: the first passing liveness probe sends "succeeded",
        # and a pod that is never ready says why, once). Webhooks go out on changes.
        self.probe_states: dict[str, bool | None] = {"liveness": None, "readiness": None}
        self.held_up = False  # the "warning" startup webhook went out
        self.last_webhook: Any = None  # the delivery (a Future) of the last webhook sent
        # Guards probe_states and last_webhook (see the module's docstring); reentrant:
        # a probe's change sends its webhook while holding it.
        self.lock = threading.RLock()

    def lifetime_used(self) -> int:
        """How much of ``--max-lifetime`` is used up."""
        return 0

    def not_ready_reason(self) -> str | None:
        """Why readiness must fail before any check runs, or None."""
        return None

    def not_alive_reason(self) -> str | None:
        """Why liveness must fail before any check runs, or None: read on the probe
        server's thread, so it must not block (no broker round trip)."""
        return None

    def mark_started(self, seconds: float, **details: Any) -> None:
        """Start-up is done: the startup probe turns 200."""
        self.started = True
        StartupTimeMetric.set(seconds)
        if self.metrics is not None:
            self.metrics.mark_started(seconds, self.options)
        self.send_webhook(
            "startup", True, details={"startup_seconds": round(seconds, 3), **details}
        )

    def start_draining(self) -> None:
        """The process stops taking work: readiness fails now, with its webhook, not
        at the next readiness probe (there may be none: a pod deleted by hand). On
        the event loop."""
        if self.draining:
            return
        self.draining = True
        if self.started:
            # Expected, unlike the other ways to fail readiness: no warning.
            self._report("readiness", False, ["draining"], logging.INFO)

    def startup_held_up(self, error_trace: str) -> None:
        """A start-up task waits for something that fails (a database that does not
        answer): the "warning" startup webhook, once per start."""
        if not self.held_up:
            self.held_up = True
            self.send_webhook("startup", WebhookStatus.WARNING, error_trace)

    def report_liveness(self, alive: bool, problems: list[str] | None = None) -> None:
        self._report("liveness", alive, problems)

    def report_readiness(self, ready: bool, problems: list[str] | None = None) -> None:
        self._report("readiness", ready, problems)

    def _report(
        self,
        probe: str,
        ok: bool,
        problems: list[str] | None,
        failing_level: int = logging.WARNING,
    ) -> None:
        """Record a probe's answer; log and send a webhook only when it changed."""
        if self.metrics_enabled:
            (HealthMetric if probe == "liveness" else ReadinessMetric).set(int(ok))
        with self.lock:
            if self.probe_states[probe] == ok:
                return
            self.probe_states[probe] = ok
            if ok:
                logger.info("%s: passing", probe.capitalize())
            else:
                logger.log(
                    failing_level, "%s: failing: %s", probe.capitalize(), "; ".join(problems or [])
                )
            self.send_webhook(probe, ok, details={"problems": problems or []})

    async def report_failed_start(self, error_trace: str) -> None:
        """The start failed: send the "failed" startup webhook with ``error_trace``,
        and give it, and every webhook sent before it, FAILURE_WEBHOOK_WAIT seconds
        to leave before the process exits."""
        self.send_webhook("startup", False, error_trace)
        await wait_for_delivery(self.last_webhook)

    def send_webhook(
        self,
        code: str,
        ok: bool | WebhookStatus,
        error_trace: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> Any:
        """Send the webhook ``code`` (succeeded/failed, or the status given); returns
        its delivery (a Future), or None without --webhook-url."""
        if isinstance(ok, WebhookStatus):
            status = ok
        else:
            status = WebhookStatus.SUCCEEDED if ok else WebhookStatus.FAILED
        if code == "startup" and status is not WebhookStatus.SUCCEEDED:
            # django-hurricane 1.6's line for a start-up that failed or is held up.
            logger.info(
                "Webhook with a status %s has been initiated%s",
                status.value,
                "" if self.webhook_url else " (not sent: no --webhook-url)",
            )
        if not self.webhook_url:
            return None
        from hurricane.webhooks import registry

        # Webhooks leave one after another: waiting for the last one sent waits for all.
        with self.lock:
            self.last_webhook = delivery = registry.get(code).run(
                self.webhook_url, status, error_trace, details=details, secret=self.webhook_secret
            )
        return delivery
