"""Attach a debugger: debugpy (VS Code and others) or a PyCharm debug server.

Either one lets whoever reaches it run any code in the process, so it is never on
unless asked for, it logs a warning when it is, and ``--forbid-debugger`` (which the
production overlay of k8s-manifests sets) turns asking for one into a refusal to
start."""

from __future__ import annotations

import logging

from hurricane.options import Options

logger = logging.getLogger("hurricane.debugging")

NEVER_IN_PRODUCTION = "it runs any code sent to it: never enable it in production"


class DebuggerError(Exception):
    """The debugger could not be set up; the message says what to do."""


def refuse_forbidden_debugger(options: Options) -> None:
    """Raise DebuggerError when a debugger is asked for while ``--forbid-debugger`` is
    set; the message names both and where each came from."""
    if not options.forbid_debugger:
        return
    for name, flag in (("debugger", "--debugger"), ("pycharm_host", "--pycharm-host")):
        if getattr(options, name):
            raise DebuggerError(
                f"refusing to start: {flag} (from {options.sources[name]}) asks for a "
                f"debugger, which --forbid-debugger (from {options.sources['forbid_debugger']}) "
                "forbids here; a debugger must never run in production"
            )


def start_debugpy(port: int) -> None:
    try:
        import debugpy
    except ImportError:
        raise DebuggerError(
            "--debugger needs debugpy: pip install 'django-hurricane[debug]'"
        ) from None
    try:
        # Every interface: the debugger component's Service reaches the pod's address.
        debugpy.listen(("0.0.0.0", port))
    except Exception as error:
        raise DebuggerError(
            f"debugpy could not listen on port {port} (--debugger-port): {error}"
        ) from None
    logger.warning("debugpy listens on port %d of every interface; %s", port, NEVER_IN_PRODUCTION)


def connect_pycharm(host: str, port: int | None) -> None:
    try:
        import pydevd_pycharm
    except ImportError:
        raise DebuggerError(
            "--pycharm-host needs pydevd-pycharm: pip install 'django-hurricane[pycharm]'"
        ) from None
    if port is None:
        raise DebuggerError("--pycharm-host needs --pycharm-port")
    try:
        pydevd_pycharm.settrace(
            host, port=port, stdoutToServer=True, stderrToServer=True, suspend=False
        )
    except Exception as error:
        raise DebuggerError(
            f"could not connect to the PyCharm debug server at {host}:{port}: {error}"
        ) from None
    logger.warning(
        "Connected to the PyCharm debug server at %s:%d; %s", host, port, NEVER_IN_PRODUCTION
    )
