"""Attach a debugger: debugpy (VS Code and others) or a PyCharm debug server."""

from __future__ import annotations

import logging

logger = logging.getLogger("hurricane.debugging")


class DebuggerError(Exception):
    """The debugger could not be set up; the message says what to do."""


def start_debugpy(port: int) -> None:
    try:
        import debugpy
    except ImportError:
        raise DebuggerError(
            "--debugger needs debugpy: pip install 'django-hurricane[debug]'"
        ) from None
    try:
        debugpy.listen(("0.0.0.0", port))
    except Exception as error:
        raise DebuggerError(
            f"debugpy could not listen on port {port} (--debugger-port): {error}"
        ) from None
    logger.info("debugpy listens on port %d", port)


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
    logger.info("Connected to the PyCharm debug server at %s:%d", host, port)
