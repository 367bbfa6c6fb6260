"""Attach a debugger: debugpy (VS Code and others) or a PyCharm debug server.

Either one lets whoever reaches it run any code in the process, so it is never on
unless asked for, it logs a warning when it is, and ``--forbid-debugger`` (which the
production overlay of k8s-manifests sets) turns asking for one into a refusal to
start. The forbid switch is on when any source turns it on (hurricane.config.options), so
that a project's setting cannot undo what the container's environment demands."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hurricane.config.options import DEBUGGER_OPTIONS, Options, described_option
from hurricane.platform.listening import (
    ListenError,
    addresses_for,
    check_port_free,
    is_address,
    shown_address,
)

logger = logging.getLogger("hurricane.debugging")


class IncompatibleOptions(Exception):
    """Options that cannot be used together (django-hurricane 1.6's exception, also
    importable from ``hurricane.server.exceptions``)."""


NEVER_IN_PRODUCTION = "it runs any code sent to it: never enable it in production"
DEFAULT_DEBUGGER_PORT = next(o.default for o in DEBUGGER_OPTIONS if o.name == "debugger_port")


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


def debugger_interface(options: Options) -> tuple[str | None, str]:
    """Where the debugger listens, and the option that says so: where the app does
    (``--app-interface``); for ``consume``, which has no app server, where its probes
    do (``--interface``). Narrowing the server for local development narrows the
    debugger with it."""
    name = "app_interface" if hasattr(options, "app_interface") else "interface"
    return getattr(options, name), described_option(options, name)


def debugger_address(interface: str | None, port: int, interface_option: str) -> str:
    """The one address debugpy listens on: the given interface's (the first address
    of a host name), else every IPv4 interface, which the debugger component's
    Service reaches on the pod's address."""
    if interface is None:
        return "0.0.0.0"
    if is_address(interface):
        return interface
    try:
        _, address = addresses_for(interface, port, interface_option)[0]
    except ListenError as error:
        raise DebuggerError(str(error)) from None
    return address[0]


def start_debugpy(
    port: int, interface: str | None = None, interface_option: str = "--app-interface"
) -> None:
    """debugpy on ``port`` of ``interface`` (None: every IPv4 interface)."""
    try:
        import debugpy
    except ImportError:
        raise DebuggerError(
            "--debugger needs debugpy: pip install 'django-hurricane[debug]'"
        ) from None
    host = debugger_address(interface, port, interface_option)
    # debugpy's adapter, a process of its own, binds the port and reports a taken one
    # as a RuntimeError among its own warnings: find out first, and say it in one line.
    try:
        check_port_free(host, port, "--debugger-port", interface_option)
    except ListenError as error:
        raise DebuggerError(str(error)) from None
    try:
        debugpy.listen((host, port))
    except Exception as error:
        raise DebuggerError(
            f"debugpy could not listen on port {port} (--debugger-port): {error}"
        ) from None
    where = "every interface" if interface is None else shown_address(host)
    logger.warning(
        "Listening for debug clients at port %d: debugpy listens on port %d of %s; %s",
        port,
        port,
        where,
        NEVER_IN_PRODUCTION,
    )


def connect_pycharm(host: str, port: int | None) -> None:
    """Connect to a PyCharm debug server. Its package missing is an error; a port not
    given, or a server that does not answer, is a warning and serving goes on (a
    debug server is often started after the app, as with django-hurricane 1.6)."""
    try:
        import pydevd_pycharm
    except ImportError:
        raise DebuggerError(
            "--pycharm-host needs pydevd-pycharm: pip install 'django-hurricane[pycharm]'"
        ) from None
    if port is None:
        logger.warning(
            "No '--pycharm-port' was specified. The '--pycharm-host' option can only be "
            "used in combination with the '--pycharm-port' option. Not connecting to %s.",
            host,
        )
        return
    try:
        # Positional: pydevd-pycharm renamed stdoutToServer and stderrToServer
        # (stdout_to_server, ...) but kept their places.
        pydevd_pycharm.settrace(host, True, True, port, False)
    except Exception as error:
        logger.warning(
            "Could not connect to the PyCharm debug server at %s:%d (%s): serving without it",
            host,
            port,
            error,
        )
        return
    logger.warning(
        "Connected to the PyCharm debug server at %s:%d; %s", host, port, NEVER_IN_PRODUCTION
    )


# -- django-hurricane 1.6's API: options as a dict --------------------------------------------


def setup_debugging(options: Mapping[str, Any]) -> None:
    """Attach the debuggers ``options`` ask for (1.6's entry point, which refused
    them together with the autoreloader; Hurricane's ``serve`` attaches them in the
    reloaded process)."""
    if options.get("autoreload") and (options.get("pycharm_host") or options.get("debugger")):
        raise IncompatibleOptions("Autoreload and debugger are not compatible")
    setup_debugpy(options)
    setup_pycharm(options)


def setup_debugpy(options: Mapping[str, Any]) -> None:
    """debugpy on ``debugger_port`` (5678) if ``debugger``; a warning if it cannot."""
    if not options.get("debugger"):
        return
    try:
        start_debugpy(options.get("debugger_port") or DEFAULT_DEBUGGER_PORT)
    except DebuggerError as error:
        logger.warning("Ignoring --debugger: %s", error)


def setup_pycharm(options: Mapping[str, Any]) -> None:
    """Connect to the PyCharm debug server at ``pycharm_host``; a warning if it cannot."""
    if not options.get("pycharm_host"):
        return
    try:
        connect_pycharm(options["pycharm_host"], options.get("pycharm_port"))
    except DebuggerError as error:
        logger.warning("Ignoring --pycharm-host: %s", error)
