"""What ``serve`` or ``consume`` would do with the options resolved, in words: the
dry run (``HURRICANE_DRY_RUN=1``) prints it instead of starting, so that a deployment's
variables, settings and flags can be checked without running anything.

Every value is shown as a log would show it (hurricane.config.masking): secrets and
what was read from files masked, URLs with nothing of a
user's own in them but their host.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hurricane.config.options import ConsumeOptions, Options, ServeOptions, probe_port_of

DRY_RUN_VARIABLE = "HURRICANE_DRY_RUN"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


class DryRunError(ValueError):
    """``HURRICANE_DRY_RUN`` holds neither a true nor a false word."""


def dry_run_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``HURRICANE_DRY_RUN`` asks for a dry run (1, true, yes, on)."""
    environ = os.environ if environ is None else environ
    value = environ.get(DRY_RUN_VARIABLE, "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise DryRunError(
        f"{DRY_RUN_VARIABLE}={environ[DRY_RUN_VARIABLE]!r} is neither true nor false "
        "(expected 1 or 0)"
    )


def described_plan(options: Options) -> list[str]:
    """The lines of the dry run of serve or consume, by the class of ``options``."""
    if isinstance(options, ServeOptions):
        command, steps = "serve", serve_steps(options)
    elif isinstance(options, ConsumeOptions):
        command, steps = "consume", consume_steps(options)
    else:
        raise TypeError(f"no plan for {type(options).__name__}")
    lines = [f"Dry run of {command}: nothing is started. With these options it would:"]
    lines += [f"  {number}. {step}" for number, step in enumerate(steps, 1)]
    changed = [name for name, source in options.sources.items() if source != "default"]
    if changed:
        lines.append("Options not at their default:")
        lines += [
            f"  --{name.replace('_', '-')} = {shown(options, name)}  ({options.sources[name]})"
            for name in changed
        ]
    else:
        lines.append("Every option is at its default.")
    lines += [f"Warning: {warning}" for warning in options.warnings]
    return lines


def shown(options: Options, name: str) -> str:
    value = options.shown(name)
    if name == "command" and isinstance(value, tuple):
        return "; ".join(" ".join(words) for words in value) or "none"
    return str(value)


def first_steps(options: Options) -> list[str]:
    """What serve and consume both do first: the probe server, then the debugger."""
    if options.no_probe:
        steps = ["answer no probes (--no-probe)"]
    else:
        metrics = "off" if options.no_metrics else options.metrics
        steps = [
            f"answer the probes on port {probe_port_of(options)}: startup "
            f"{options.startup_probe}, readiness {options.readiness_probe}, liveness "
            f"{options.liveness_probe}; metrics {metrics}"
        ]
    if options.debugger:
        steps.append(f"listen for a debugger (debugpy) on port {options.debugger_port}")
    elif options.pycharm_host:
        steps.append(
            f"connect to the PyCharm debug server at {options.pycharm_host}:{options.pycharm_port}"
        )
    return steps


def serve_steps(options: ServeOptions) -> list[str]:
    steps = first_steps(options)
    if options.command:
        steps.append(f"run the management commands {shown(options, 'command')}")
    if options.check_migrations_apply or options.check_migrations == "apply":
        steps.append("wait for the databases, then apply pending migrations")
    elif options.check_migrations:
        steps.append("wait until the databases answer and no migration is pending")
    interface = options.app_interface or "every interface"
    processes = f"{options.processes} processes of " if options.processes > 1 else ""
    files = [kind for kind in ("static", "media") if getattr(options, kind)]
    steps.append(
        f"serve the app on port {options.port} ({interface}) with {processes}"
        f"{options.workers} worker threads"
        + (f", and the {' and '.join(files)} files" if files else "")
    )
    return steps


def consume_steps(options: ConsumeOptions) -> list[str]:
    steps = first_steps(options)
    broker = f"{options.amqp_host or '(no --amqp-host)'}:{options.amqp_port}"
    user = shown(options, "amqp_user") if options.amqp_user else "guest"
    steps.append(f"connect to the broker at {broker}, vhost {options.amqp_vhost}, as {user}")
    queue = options.queue or "a queue the broker names"
    where: list[str] = []
    if options.exchange:
        where.append(f"bound to the exchange {options.exchange}")
    if options.routing_key:
        where.append(f"with the routing key {options.routing_key}")
    handler = options.handler or "(none given: it would stop)"
    steps.append(
        f"consume {queue}{' ' + ' '.join(where) if where else ''} with the handler "
        f"{handler}, {options.prefetch} messages prefetched"
    )
    return steps
