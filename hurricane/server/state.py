"""What the probes report, shared by ``serve`` and ``consume``: start-up, draining,
each probe's last answer, and the webhooks sent when an answer changes.

Touched on the event loop only; each command's subclass says what "busy" and
"used up" mean for it (requests waiting for a worker, messages handled, ...).
"""

from __future__ import annotations

import logging
from typing import Any

from hurricane.metrics.requests import HealthMetric, ReadinessMetric, StartupTimeMetric
from hurricane.server.probes import ProbeChecks

logger = logging.getLogger("hurricane.server")


class ProbeState:
    #: What ``--max-lifetime`` counts, for the liveness answer.
    lifetime_unit = "requests"

    def __init__(self, options: Any) -> None:
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
        # A process that runs is alive; it is not ready until a probe says so.
        # Webhooks go out on changes from these.
        self.probe_states = {"liveness": True, "readiness": False}
        # Probes that answered since the start: a first answer that fails is logged even
        # though it changes nothing (a pod that is never ready says why, once).
        self.answered: set[str] = set()
        self.last_webhook: Any = None  # the delivery (a Future) of the last webhook sent

    def lifetime_used(self) -> int:
        """How much of ``--max-lifetime`` is used up."""
        return 0

    def not_ready_reason(self) -> str | None:
        """Why readiness must fail before any check runs, or None."""
        return None

    def mark_started(self, seconds: float, **info: Any) -> None:
        """Start-up is done: the startup probe turns 200."""
        self.started = True
        StartupTimeMetric.set(seconds)
        if self.metrics is not None:
            self.metrics.mark_started(seconds, self.options)
        self.send_webhook("startup", True, info={"startup_seconds": round(seconds, 3), **info})

    def report_liveness(self, alive: bool, problems: list[str] | None = None) -> None:
        self._report("liveness", alive, problems)

    def report_readiness(self, ready: bool, problems: list[str] | None = None) -> None:
        self._report("readiness", ready, problems)

    def _report(self, probe: str, ok: bool, problems: list[str] | None) -> None:
        """Record a probe's answer; log and send a webhook only when it changed."""
        if self.metrics_enabled:
            (HealthMetric if probe == "liveness" else ReadinessMetric).set(int(ok))
        changed = self.probe_states[probe] != ok
        if not changed and (ok or probe in self.answered):
            return
        self.answered.add(probe)
        self.probe_states[probe] = ok
        if ok:
            logger.info("%s: passing", probe.capitalize())
        else:
            logger.warning("%s: failing: %s", probe.capitalize(), "; ".join(problems or []))
        if changed:
            self.send_webhook(probe, ok, info={"problems": problems or []})

    def send_webhook(
        self,
        code: str,
        ok: bool,
        error_trace: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> Any:
        if not self.webhook_url:
            return None
        from hurricane.webhooks import registry
        from hurricane.webhooks.base import WebhookStatus

        status = WebhookStatus.SUCCEEDED if ok else WebhookStatus.FAILED
        # Webhooks leave one after another: waiting for the last one sent waits for all.
        self.last_webhook = registry.get(code).run(
            self.webhook_url, status, error_trace, info=info, secret=self.webhook_secret
        )
        return self.last_webhook
