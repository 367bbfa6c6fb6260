"""One resolver for every option of ``serve`` and ``consume``.

Each option is looked up in this order: the command line, the Django setting
``HURRICANE_<NAME>``, the environment variable ``HURRICANE_<NAME>``, the names
django-hurricane 1.6 read (:data:`DJANGO_HURRICANE_16_NAMES`, with a deprecation
warning), the default. Values are parsed and validated here, once; a bad value raises
:class:`OptionError` with one line naming the option, where the value came from and
what was expected. A ``HURRICANE_*`` setting or variable that nothing reads is
warned about with the name closest to it. Nothing else in Hurricane reads
``os.environ`` for these options.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import math
import os
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, NamedTuple, Self

from hurricane.config.machine import usable_cores
from hurricane.config.masking import mentions, shown_value

TRUE_WORDS = {"true", "1", "yes", "on", "y"}
FALSE_WORDS = {"false", "0", "no", "off", "n", ""}


class OptionError(ValueError):
    """A value that cannot be used; its message is one line for the user."""


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ValueError("a boolean (true/false, 1/0, yes/no)")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValueError


def parse_port(value: Any) -> int:
    try:
        port = _integer(value)
    except ValueError:
        raise ValueError("a port number between 1 and 65535") from None
    if not 1 <= port <= 65535:
        raise ValueError("a port number between 1 and 65535")
    return port


def positive_int(value: Any) -> int:
    try:
        number = _integer(value)
    except ValueError:
        raise ValueError("a whole number of at least 1") from None
    if number < 1:
        raise ValueError("a whole number of at least 1")
    return number


def non_negative_int(value: Any) -> int:
    try:
        number = _integer(value)
    except ValueError:
        raise ValueError("a whole number (0 or more)") from None
    if number < 0:
        raise ValueError("a whole number (0 or more)")
    return number


def non_negative_seconds(value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError("a number of seconds (0 or more)") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError("a number of seconds (0 or more)")
    return seconds


def positive_seconds(value: Any) -> float:
    try:
        seconds = non_negative_seconds(value)
    except ValueError:
        raise ValueError("a number of seconds above 0") from None
    if seconds <= 0:
        raise ValueError("a number of seconds above 0")
    return seconds


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}


def parse_size(value: Any) -> int:
    """Bytes, with an optional unit: ``1048576``, ``512k``, ``10MB``, ``1G`` (powers of 1024)."""
    expected = "a size in bytes, optionally with a unit (e.g. 1048576, 512k, 10MB)"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, int):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(value))
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(expected)
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size < 1:
        raise ValueError(expected)
    return size


def parse_migration_check(value: Any) -> bool | str:
    """``true`` waits for pending migrations, ``apply`` applies them, ``false`` skips both."""
    if isinstance(value, str) and value.strip().lower() == "apply":
        return "apply"
    try:
        return parse_bool(value)
    except ValueError:
        raise ValueError("true, false or apply") from None


def parse_url_path(value: Any) -> str:
    """A probe or metrics path; stored with one leading slash and no trailing one."""
    if not isinstance(value, str) or not value.strip("/ ") or re.search(r"[\s?#]", value.strip()):
        raise ValueError("a URL path such as /ready")
    return "/" + value.strip().strip("/")


def parse_text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty text")
    return value.strip()


def parse_secret(value: Any) -> str:
    """A password or key: taken as it is (spaces count), but never empty."""
    if not isinstance(value, str) or value == "":
        raise ValueError("a non-empty text")
    return value


def parse_url(value: Any) -> str:
    """An http:// or https:// URL with a host and, if any, a port that exists (a bad
    one would only fail later, at every webhook)."""
    import urllib.parse

    expected = "an http:// or https:// URL"
    if not isinstance(value, str) or not re.match(r"https?://[^\s/]+", value.strip()):
        raise ValueError(expected)
    url = value.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{expected} with a port between 1 and 65535") from None
    if not parts.hostname or port == 0 or re.search(r"\s", url):
        raise ValueError(f"{expected} with a host (and a port between 1 and 65535)")
    return url


def parse_commands(value: Any) -> tuple[tuple[str, ...], ...]:
    """Management commands, each a command line such as ``"compilemessages --no-color"``.

    From the environment or a setting given as text, one command per line;
    from a setting given as a list, one command per item: a command line, or a list
    of its words (a list of one text is a command line, as django-hurricane 1.6's
    setting COMMAND held them: ``[["migrate --noinput"]]``).
    """
    if isinstance(value, str):
        lines = value.splitlines()
    elif isinstance(value, (list, tuple)):
        lines = list(value)
    else:
        raise ValueError("management commands, one per line")
    commands: list[tuple[str, ...]] = []
    for line in lines:
        if isinstance(line, (list, tuple)) and len(line) == 1 and isinstance(line[0], str):
            line = line[0]
        if isinstance(line, (list, tuple)):
            words = [str(word) for word in line]
        elif isinstance(line, str):
            try:
                words = shlex.split(line, comments=True)
            except ValueError as error:
                raise ValueError(
                    f"management commands, one per line ({error} in {line!r})"
                ) from None
        else:
            raise ValueError("management commands, one per line")
        if words:
            commands.append(tuple(words))
    return tuple(commands)


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _one_of(value: Any, words: Sequence[str], expected: str) -> str:
    """``value`` as one of ``words`` (lower case, surrounding blanks ignored)."""
    if isinstance(value, str) and value.strip().lower() in words:
        return value.strip().lower()
    raise ValueError(expected)


QUEUE_TYPES = ("classic", "quorum")


def parse_queue_type(value: Any) -> str:
    return _one_of(value, QUEUE_TYPES, "classic or quorum")


def parse_log_format(value: Any) -> str:
    return _one_of(value, LOG_FORMATS, "text or json")


def parse_log_level(value: Any) -> str:
    if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
        return value.strip().upper()
    raise ValueError("one of " + ", ".join(LOG_LEVELS))


# The event loops of --loop ("auto": uvloop where it is installed).
LOOPS = ("auto", "uvloop", "asyncio")
# The modes of --cpu-affinity.
AFFINITY_MODES = ("auto", "off")
LIFESPAN_MODES = ("auto", "on", "off")
ASYNC_VIEWS_MODES = ("loop", "pool")


def uvloop_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def parse_loop(value: Any) -> str:
    name = _one_of(value, LOOPS, "auto, uvloop or asyncio")
    if name == "uvloop" and not uvloop_installed():
        raise ValueError("auto or asyncio, since uvloop is not installed (pip install uvloop)")
    return name


def parse_cpu_affinity(value: Any) -> str:
    return _one_of(value, AFFINITY_MODES, "auto or off")


def parse_lifespan(value: Any) -> str:
    return _one_of(value, LIFESPAN_MODES, "auto, on or off")


def parse_async_views(value: Any) -> str:
    return _one_of(value, ASYNC_VIEWS_MODES, "loop or pool")


def parse_interface(value: Any) -> str | None:
    """A host name or IP address to bind to (an IPv6 one with or without brackets);
    ``*`` is every interface (None). Resolved when the server binds."""
    import ipaddress

    expected = "a host name or IP address without a port (or * for every interface)"
    if not isinstance(value, str) or not value.strip():
        raise ValueError(expected)
    host = value.strip()
    if host == "*":
        return None
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if bracketed or ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(expected) from None
    elif not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise ValueError(expected)
    return host


FORWARDED_ALLOW_IPS_EXPECTED = (
    "IP addresses or networks (e.g. 10.0.0.0/8, fd00::/8), comma-separated, or *"
)


@dataclass(frozen=True)
class ProxyNetworks:
    """``--forwarded-allow-ips`` read: the networks whose X-Forwarded-* headers are
    believed, or everyone (``*``). The server asks it through
    :class:`hurricane.http.forwarded.TrustedProxies`."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    everyone: bool = False

    def __repr__(self) -> str:
        shown = "*" if self.everyone else ", ".join(str(network) for network in self.networks)
        return f"ProxyNetworks({shown})"


def parse_forwarded_allow_ips(value: Any) -> ProxyNetworks | None:
    """Comma-separated addresses and networks (IPv4 or IPv6), or ``*``; a Django
    setting may also give a list. ``None`` when the value names no one. Raises
    ValueError naming the first bad entry."""
    if isinstance(value, str):
        entries = value.split(",")
    elif isinstance(value, (list, tuple)):
        entries = [str(entry) for entry in value]
    else:
        raise ValueError(FORWARDED_ALLOW_IPS_EXPECTED)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    everyone = False
    for entry in (entry.strip() for entry in entries):
        if not entry:
            continue
        if entry == "*":
            everyone = True
            continue
        try:
            # strict=False: "10.1.2.3/8" is read as the network it lies in.
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{FORWARDED_ALLOW_IPS_EXPECTED}; {entry!r} is neither") from None
    if not everyone and not networks:
        return None
    return ProxyNetworks(tuple(networks), everyone)


@dataclass(frozen=True)
class Option:
    """One option: its name (``probe_port``), how to parse it and its help text."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    flag_takes_value: bool = True
    metavar: str | None = None
    repeatable: bool = False
    env_name: str | None = None  # defaults to HURRICANE_<NAME>
    # Names read after the variable, with a deprecation warning: those of django-hurricane
    # 1.6. A HURRICANE_* one is read as a setting and from the environment; any other
    # as a setting only (an environment variable PORT belongs to the platform).
    old_names: tuple[str, ...] = field(default_factory=tuple)
    # A safety switch: on when any source turns it on, whatever the others say, so
    # that a project's setting cannot undo what the container's environment demands.
    on_from_any_source: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        return self.env_name or "HURRICANE_" + self.name.upper()


def flag_option(name: str, help: str) -> Option:
    return Option(name, parse_bool, False, help, flag_takes_value=False)


# Options shared by every Hurricane command that runs probes (serve, consume).
PROBE_OPTIONS: tuple[Option, ...] = (
    Option(
        "probe_port",
        parse_port,
        None,
        "Port of the probe and metrics server (default: the app port + 1). "
        "Give the app port to serve both on one port.",
        metavar="PORT",
    ),
    Option(
        "interface",
        parse_interface,
        None,
        "Host name or address the probe server binds to (default: every interface, "
        "IPv4 and IPv6; the kubelet reaches the probes on the pod IP).",
        metavar="HOST",
    ),
    Option(
        "startup_probe", parse_url_path, "/startup", "Path of the startup probe.", metavar="PATH"
    ),
    Option(
        "readiness_probe", parse_url_path, "/ready", "Path of the readiness probe.", metavar="PATH"
    ),
    Option(
        "liveness_probe", parse_url_path, "/alive", "Path of the liveness probe.", metavar="PATH"
    ),
    Option(
        "req_queue_len",
        non_negative_int,
        10,
        "Readiness fails while this many requests (or more) wait for a worker; 0: always.",
        metavar="N",
    ),
    flag_option("no_probe", "Do not start the probe server."),
    flag_option("no_metrics", "Do not collect metrics nor serve the metrics endpoint."),
    Option(
        "metrics",
        parse_url_path,
        "/metrics",
        "Path of the Prometheus metrics endpoint.",
        metavar="PATH",
    ),
    Option(
        "webhook_url",
        parse_url,
        None,
        "Send webhooks about state changes to this URL.",
        metavar="URL",
    ),
    Option(
        "webhook_secret",
        parse_secret,
        None,
        "Sign each webhook with HMAC-SHA256 under this secret, with the time of sending "
        "and without (better given as the setting or environment variable than on the "
        "command line).",
        metavar="SECRET",
    ),
    Option(
        "max_lifetime",
        positive_int,
        None,
        "After this many app requests liveness answers 400, so Kubernetes restarts the pod.",
        metavar="N",
    ),
    flag_option("autoreload", "Restart the process when Python code changes (development)."),
    flag_option("debug", "Tornado's debug mode for Hurricane's own handlers (not Django's DEBUG)."),
    flag_option(
        "skip_checks",
        "Do not run Django's system checks at start (they are logged, and an error stops "
        "the start).",
    ),
)

DEBUGGER_OPTIONS: tuple[Option, ...] = (
    flag_option("debugger", "Start debugpy, listening on --debugger-port."),
    Option("debugger_port", parse_port, 5678, "Port debugpy listens on.", metavar="PORT"),
    Option(
        "pycharm_host",
        parse_text,
        None,
        "Connect to a PyCharm debug server on this host.",
        metavar="HOST",
    ),
    Option("pycharm_port", parse_port, None, "Port of the PyCharm debug server.", metavar="PORT"),
    Option(
        "forbid_debugger",
        parse_bool,
        False,
        "Refuse to start when --debugger or --pycharm-host asks for a debugger (the "
        "production overlay of k8s-manifests sets it). On when any source turns it on: "
        "the command line, the setting or the environment variable.",
        flag_takes_value=False,
        on_from_any_source=True,
    ),
)

# How serve and consume log (hurricane.platform.logs).
LOG_OPTIONS: tuple[Option, ...] = (
    Option(
        "log_format",
        parse_log_format,
        "text",
        "text: one line of text per record; json: one JSON object per line, for log collectors.",
        metavar="FORMAT",
    ),
    Option(
        "log_level",
        parse_log_level,
        "INFO",
        "Level of Hurricane's loggers: DEBUG, INFO, WARNING, ERROR or CRITICAL (default "
        "INFO; DEBUG with --debug).",
        metavar="LEVEL",
    ),
)

GRACEFUL_TIMEOUT_OPTION = Option(
    "graceful_timeout",
    non_negative_seconds,
    30.0,
    "On SIGTERM, wait this long for in-flight work to finish.",
    metavar="SECONDS",
)

SERVE_OPTIONS: tuple[Option, ...] = (
    Option("port", parse_port, 8000, "Port of the app server.", metavar="PORT"),
    Option(
        "app_interface",
        parse_interface,
        None,
        "Host name or address the app server (and debugpy) binds to (default: every "
        "interface, IPv4 and IPv6; 127.0.0.1 keeps it on this machine).",
        metavar="HOST",
    ),
    *PROBE_OPTIONS,
    flag_option("static", "Serve STATIC_ROOT under STATIC_URL (through the finders when DEBUG)."),
    flag_option("media", "Serve MEDIA_ROOT under MEDIA_URL."),
    Option(
        "command",
        parse_commands,
        (),
        "Management command to run before serving; repeatable; quote a command with its "
        'arguments: --command "compilemessages --no-color".',
        metavar="COMMAND",
        repeatable=True,
        env_name="HURRICANE_COMMANDS",
    ),
    Option(
        "check_migrations",
        parse_migration_check,
        False,
        "Before serving, wait until the databases answer and no migration is pending "
        "(from settings or the environment also: apply).",
        flag_takes_value=False,
    ),
    flag_option("check_migrations_apply", "Before serving, apply pending migrations."),
    Option(
        "max_memory",
        positive_int,
        None,
        "When the process's memory (RSS) exceeds this many MB, drain and restart in place.",
        metavar="MB",
    ),
    Option(
        "workers",
        positive_int,
        # As concurrent.futures' own default, on the cores the container may use
        # (cpuset and CPU limit), not the host's.
        min(32, math.ceil(usable_cores()) + 4),
        "Threads running synchronous Django code.",
        metavar="N",
    ),
    Option(
        "max_workers",
        positive_int,
        64,
        "Most threads running synchronous Django code: above --workers, the pool grows "
        "while its threads wait (on I/O, sleep, locks) rather than compute, and shrinks "
        "back when they idle (default 64; a value below --workers counts as --workers, "
        "a fixed pool).",
        metavar="N",
    ),
    Option(
        "processes",
        positive_int,
        1,
        "Serving processes sharing the app port, each with its own --workers; above 1, "
        "a supervisor answers the probes for all of them and replaces one that dies.",
        metavar="N",
    ),
    Option(
        "asgi",
        parse_bool,
        None,
        "Serve through the project's ASGI application: async views run on the event "
        "loop, sync views in the worker pool (default: when ASGI_APPLICATION is set; "
        "HURRICANE_ASGI=false turns it off).",
        flag_takes_value=False,
    ),
    Option(
        "async_views",
        parse_async_views,
        "loop",
        "Where Django's async views run on the ASGI path: loop runs each request on the "
        "event loop, its sync middleware and signal receivers on a thread lent to it; "
        "pool runs a request in a worker thread with its coroutine on the event loop "
        "(faster for short awaits), while threads above --workers are free and until "
        "the view holds a thread for over a second or streams, then on the loop.",
        metavar="MODE",
    ),
    Option(
        "loop",
        parse_loop,
        "auto",
        "Event loop of the app server: uvloop, asyncio's own, or auto (uvloop when "
        "installed, as it is with Hurricane everywhere but Windows).",
        metavar="LOOP",
    ),
    Option(
        "cpu_affinity",
        parse_cpu_affinity,
        "auto",
        "auto: keep each serving process's threads on one CPU core (the GIL runs its "
        "Python on one core at a time, and threads spread over cores hand it across "
        "them), moving to a quieter core when other processes crowd it; off: leave "
        "them to the kernel.",
        metavar="MODE",
    ),
    Option(
        "static_watch",
        parse_text,
        None,
        "With --autoreload, run collectstatic again when files under PATH change.",
        metavar="PATH",
    ),
    Option(
        "max_body_size",
        parse_size,
        100 * 1024**2,
        "Largest request body accepted; larger ones get 413.",
        metavar="BYTES",
    ),
    Option(
        "max_buffer_size",
        parse_size,
        100 * 1024**2,
        "Largest amount of data buffered per connection.",
        metavar="BYTES",
    ),
    Option(
        "max_request_line",
        parse_size,
        8 * 1024,
        "Longest request line (method, URL, version) accepted; a longer one gets 414.",
        metavar="BYTES",
    ),
    Option(
        "max_header_size",
        parse_size,
        64 * 1024,
        "Largest header block (request line and headers) accepted; a larger one gets 431 "
        "and its connection is closed.",
        metavar="BYTES",
    ),
    Option(
        "max_headers",
        positive_int,
        100,
        "Most header lines in a request; more get 431.",
        metavar="N",
    ),
    Option(
        "keep_alive_timeout",
        positive_seconds,
        120.0,
        "Close a keep-alive connection idle this long (above the idle timeouts of the "
        "proxies and load balancers in front, so that they close first).",
        metavar="SECONDS",
    ),
    Option(
        "header_timeout",
        positive_seconds,
        10.0,
        "Close a connection that has not sent a complete header block this long after "
        "it was accepted or after the first byte of its next request.",
        metavar="SECONDS",
    ),
    Option(
        "body_timeout",
        positive_seconds,
        60.0,
        "Close a connection whose request body has not arrived this long after its headers.",
        metavar="SECONDS",
    ),
    Option(
        "write_timeout",
        positive_seconds,
        60.0,
        "Close a connection whose client has taken none of its response for this long.",
        metavar="SECONDS",
    ),
    Option(
        "forwarded_allow_ips",
        parse_forwarded_allow_ips,
        None,
        "Proxies whose X-Forwarded-For and X-Forwarded-Proto headers are believed: "
        "comma-separated IP addresses and networks (10.0.0.0/8, fd00::/8), or * for any "
        "(default: none).",
        metavar="IPS",
    ),
    Option(
        "lifespan",
        parse_lifespan,
        "auto",
        "The ASGI lifespan protocol (startup and shutdown events): auto runs it when "
        "the application supports it; on requires it (a failure fails the start); off "
        "never sends it.",
        metavar="MODE",
    ),
    Option(
        "ws_max_message_size",
        parse_size,
        1024**2,
        "Largest WebSocket message taken from a client (ASGI projects); a larger one "
        "closes the connection with code 1009.",
        metavar="BYTES",
    ),
    Option(
        "ws_ping_interval",
        non_negative_seconds,
        20.0,
        "Send a WebSocket ping this often, so that proxies see traffic on idle "
        "connections and dead clients are found; 0: no pings.",
        metavar="SECONDS",
    ),
    Option(
        "ws_ping_timeout",
        non_negative_seconds,
        20.0,
        "Close a WebSocket whose client has not answered a ping within this long "
        "(at most --ws-ping-interval); 0: never.",
        metavar="SECONDS",
    ),
    Option(
        "ws_per_message_deflate",
        parse_bool,
        True,
        "Offer WebSocket compression (permessage-deflate) to clients that ask for it.",
        metavar="BOOL",
    ),
    Option(
        "shutdown_delay",
        non_negative_seconds,
        0.0,
        "On SIGTERM, keep serving this long (readiness already 503) before closing the "
        "listener, so endpoints can update.",
        metavar="SECONDS",
    ),
    GRACEFUL_TIMEOUT_OPTION,
    *LOG_OPTIONS,
    *DEBUGGER_OPTIONS,
)

# The Django settings django-hurricane 1.6 read for serve: each option's name without
# the HURRICANE_ prefix; for --command also its variable HURRICANE_COMMAND. Not its
# DEBUG (for --debug): that is Django's own setting, and a project's DEBUG = True
# must not turn on Tornado's debug mode. Its consume read none of these.
DJANGO_HURRICANE_16_NAMES: dict[str, tuple[str, ...]] = {
    **{
        name: (name.upper(),)
        for name in (
            "static",
            "media",
            "autoreload",
            "port",
            "metrics",
            "liveness_probe",
            "readiness_probe",
            "startup_probe",
            "probe_port",
            "req_queue_len",
            "no_probe",
            "no_metrics",
            "check_migrations",
            "check_migrations_apply",
            "debugger",
            "debugger_port",
            "webhook_url",
            "max_lifetime",
            "max_memory",
            "workers",
            "static_watch",
            "pycharm_host",
            "pycharm_port",
            "max_body_size",
            "max_buffer_size",
        )
    },
    "command": ("HURRICANE_COMMAND", "COMMAND"),
}
SERVE_OPTIONS = tuple(
    replace(option, old_names=DJANGO_HURRICANE_16_NAMES.get(option.name, ()))
    for option in SERVE_OPTIONS
)


# The broker's credentials: read by ``consume`` and by AMQPClient users start
# themselves. Settings and environment variables without the HURRICANE_ prefix, as
# the original library documents them.
AMQP_CREDENTIAL_OPTIONS: tuple[Option, ...] = (
    Option(
        "amqp_user",
        parse_text,
        None,
        "User name for the broker (default: the broker's guest).",
        metavar="USER",
        env_name="AMQP_USER",
    ),
    Option(
        "amqp_password",
        parse_secret,
        None,
        "Password for the broker (better given as the setting or environment variable).",
        metavar="PASSWORD",
        env_name="AMQP_PASSWORD",
    ),
)

# The probe options mean the same for consume, but count messages, not requests.
_CONSUME_PROBE_CHANGES: dict[str, dict[str, Any]] = {
    "probe_port": {"default": 8001, "help": "Port of the probe and metrics server."},
    "req_queue_len": {
        "help": "Readiness fails while this many messages (or more) wait for the handler."
    },
    "max_lifetime": {"help": "After this many messages handled, liveness answers 400."},
}

CONSUME_OPTIONS: tuple[Option, ...] = (
    Option(
        "handler",
        parse_text,
        None,
        "Dotted path of the handler class (a TopicHandler subclass); also the first "
        "argument of consume.",
        metavar="HANDLER",
    ),
    Option(
        "queue",
        parse_text,
        None,
        "Queue to declare and consume (default: one the broker names, exclusive to the "
        "connection).",
        metavar="QUEUE",
    ),
    Option(
        "exchange",
        parse_text,
        None,
        "Topic exchange to declare and bind the queue to (required).",
        metavar="EXCHANGE",
    ),
    Option(
        "routing_key",
        parse_text,
        None,
        "Routing key binding the queue to the exchange (default: the queue's name).",
        metavar="KEY",
    ),
    Option(
        "amqp_host",
        parse_text,
        None,
        "Host name of the broker (required).",
        metavar="HOST",
        env_name="AMQP_HOST",
    ),
    Option(
        "amqp_port", parse_port, 5672, "Port of the broker.", metavar="PORT", env_name="AMQP_PORT"
    ),
    Option(
        "amqp_vhost",
        parse_text,
        "/",
        "Virtual host on the broker.",
        metavar="VHOST",
        env_name="AMQP_VHOST",
    ),
    *AMQP_CREDENTIAL_OPTIONS,
    Option(
        "amqp_heartbeat",
        non_negative_int,
        None,
        "Heartbeat interval in seconds to ask the broker for (0 turns heartbeats off; "
        "default: the broker's).",
        metavar="SECONDS",
    ),
    Option(
        "prefetch",
        positive_int,
        10,
        "Messages the broker sends ahead, unacknowledged, while the handler works.",
        metavar="N",
    ),
    flag_option(
        "durable", "Declare the exchange and queues durable (they survive a broker restart)."
    ),
    Option(
        "queue_type",
        parse_queue_type,
        "classic",
        "classic or quorum. A quorum queue is replicated and durable (so is the exchange), "
        "and counts each message's deliveries itself, across pods and restarts.",
        metavar="TYPE",
    ),
    Option(
        "dead_letter_exchange",
        parse_text,
        None,
        "Declare this direct exchange and a dead-letter queue bound to it; rejected "
        "messages and those given up go there.",
        metavar="EXCHANGE",
    ),
    Option(
        "dead_letter_queue",
        parse_text,
        None,
        "Name of the dead-letter queue (default: QUEUE.dead-letter).",
        metavar="QUEUE",
    ),
    Option(
        "requeue_on_error",
        parse_bool,
        True,
        "When on_message raises: true puts the message back in the queue (up to "
        "--max-deliveries), false rejects it at once (dead-letters it, where set up).",
        metavar="BOOL",
    ),
    Option(
        "max_deliveries",
        non_negative_int,
        5,
        "Deliveries of a message before it is given up: rejected without requeue "
        "(dead-lettered, where set up, else dropped) with one ERROR line. 0: no limit.",
        metavar="N",
    ),
    Option(
        "max_message_size",
        parse_size,
        16 * 1024**2,
        "Largest message body taken; a larger one is rejected unread as it arrives "
        "(dead-lettered, where set up, else dropped) with one ERROR line.",
        metavar="BYTES",
    ),
    flag_option(
        "reconnect",
        "When the broker goes away, connect again with backoff instead of exiting.",
    ),
    *(replace(option, **_CONSUME_PROBE_CHANGES.get(option.name, {})) for option in PROBE_OPTIONS),
    replace(
        GRACEFUL_TIMEOUT_OPTION,
        help="On SIGTERM, wait this long for the message in hand to be handled.",
    ),
    *LOG_OPTIONS,
    *DEBUGGER_OPTIONS,
)

# The probe options mean the same in a Celery worker or beat, but count tasks. Those
# that shape how Hurricane runs a process (--autoreload, --skip-checks) are Celery's
# business there, so the table leaves them out.
_CELERY_PROBE_CHANGES: dict[str, dict[str, Any]] = {
    "probe_port": {"default": 8001, "help": "Port of the probe and metrics server."},
    "req_queue_len": {
        "help": "Readiness fails while this many tasks (or more) were received by the "
        "worker and wait for a pool process; 0: always."
    },
    "max_lifetime": {"help": "After this many tasks handled, liveness answers 400."},
}

CELERY_OPTIONS: tuple[Option, ...] = (
    *(
        replace(option, **_CELERY_PROBE_CHANGES.get(option.name, {}))
        for option in PROBE_OPTIONS
        if option.name not in ("autoreload", "skip_checks")
    ),
    Option(
        "celery_loop_timeout",
        positive_seconds,
        60.0,
        "Liveness fails when the worker's consumer loop made no progress for this long "
        "while connected (beat: when the scheduler has not ticked for its max interval "
        "plus this long).",
        metavar="SECONDS",
    ),
    Option(
        "celery_task_labels",
        positive_int,
        100,
        "Task names the metrics label one by one; tasks beyond that count as 'other'.",
        metavar="N",
    ),
)


def variable_of(name: str) -> str:
    """The setting and environment variable of option ``name`` (``command``:
    HURRICANE_COMMANDS), by whose name and source hurricane.config.masking tells a secret."""
    for option in (*SERVE_OPTIONS, *CONSUME_OPTIONS, *CELERY_OPTIONS):
        if option.name == name:
            return option.variable
    return name


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Options:
    """Resolved option values, typed and frozen (``options.probe_port``): the options
    ``serve`` (:class:`ServeOptions`) and ``consume`` (:class:`ConsumeOptions`) share.

    One field per option of the command's table, named as the option, besides
    ``sources`` and ``warnings`` (tests/test_options.py checks that fields and tables
    name the same options). A changed copy: :func:`dataclasses.replace`. Compared and
    hashed by identity (``eq=False``), as the options were before they were frozen."""

    # The table a subclass resolves (Options.resolve); the shared options have none.
    option_table: ClassVar[tuple[Option, ...]] = ()

    # The probes (PROBE_OPTIONS).
    probe_port: int | None
    interface: str | None
    startup_probe: str
    readiness_probe: str
    liveness_probe: str
    req_queue_len: int
    no_probe: bool
    no_metrics: bool
    metrics: str
    webhook_url: str | None
    webhook_secret: str | None
    max_lifetime: int | None
    autoreload: bool
    debug: bool
    skip_checks: bool
    graceful_timeout: float
    # LOG_OPTIONS.
    log_format: str
    log_level: str
    # DEBUGGER_OPTIONS.
    debugger: bool
    debugger_port: int
    pycharm_host: str | None
    pycharm_port: int | None
    forbid_debugger: bool

    # Not options. Where each value came from ("default", "command line --port",
    # "environment HURRICANE_PORT", ...), by option name; and the warnings to log once
    # logging is set up: names of django-hurricane 1.6, misspelt names.
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def resolve(
        cls,
        command_line: Mapping[str, Any],
        settings: Any,
        environ: Mapping[str, str] | None = None,
    ) -> Self:
        """The options of :attr:`option_table`, resolved as :func:`resolve` does."""
        if not cls.option_table:
            raise TypeError(f"{cls.__name__} has no option table to resolve")
        return cls.of(resolve_values(cls.option_table, command_line, settings, environ))

    @classmethod
    def of(cls, resolved: Resolved) -> Self:
        return cls(**resolved.values, sources=resolved.sources, warnings=resolved.warnings)

    def shown(self, name: str) -> Any:
        """The value of option ``name`` as a log may show it (hurricane.config.masking)."""
        return shown_value(variable_of(name), getattr(self, name))

    def __repr__(self) -> str:
        values = {name: self.shown(name) for name in self.sources}
        return f"{type(self).__name__}({values})"


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class ServeOptions(Options):
    """``serve``'s resolved options (:data:`SERVE_OPTIONS`)."""

    option_table: ClassVar[tuple[Option, ...]] = SERVE_OPTIONS

    port: int
    app_interface: str | None
    static: bool
    media: bool
    command: tuple[tuple[str, ...], ...]  # each command's words
    check_migrations: bool | str  # True, False or "apply"
    check_migrations_apply: bool
    max_memory: int | None
    workers: int
    max_workers: int
    processes: int
    asgi: bool | None  # None: when ASGI_APPLICATION is set
    async_views: str
    loop: str
    cpu_affinity: str
    static_watch: str | None
    max_body_size: int
    max_buffer_size: int
    max_request_line: int
    max_header_size: int
    max_headers: int
    keep_alive_timeout: float
    header_timeout: float
    body_timeout: float
    write_timeout: float
    forwarded_allow_ips: ProxyNetworks | None
    lifespan: str
    ws_max_message_size: int
    ws_ping_interval: float
    ws_ping_timeout: float
    ws_per_message_deflate: bool
    shutdown_delay: float


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class ConsumeOptions(Options):
    """``consume``'s resolved options (:data:`CONSUME_OPTIONS`)."""

    option_table: ClassVar[tuple[Option, ...]] = CONSUME_OPTIONS

    probe_port: int  # consume's has a default (8001)
    handler: str | None  # required: hurricane.amqp.runtime says so when it is missing
    queue: str | None
    exchange: str | None
    routing_key: str | None
    amqp_host: str | None
    amqp_port: int
    amqp_vhost: str
    amqp_user: str | None
    amqp_password: str | None
    amqp_heartbeat: int | None
    prefetch: int
    durable: bool
    queue_type: str
    dead_letter_exchange: str | None
    dead_letter_queue: str | None
    requeue_on_error: bool
    max_deliveries: int
    max_message_size: int
    reconnect: bool


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class CeleryOptions(Options):
    """The options of Hurricane's probes in a Celery worker or beat
    (:data:`CELERY_OPTIONS`, used by hurricane.celery). Celery runs the process, so
    the shared fields that shape how Hurricane would run one are not in the table and
    keep these values."""

    option_table: ClassVar[tuple[Option, ...]] = CELERY_OPTIONS

    probe_port: int  # a default of its own (8001), as consume's
    celery_loop_timeout: float
    celery_task_labels: int
    # Not in the table: Celery reloads, checks, logs and stops on its own terms.
    autoreload: bool = False
    skip_checks: bool = False
    graceful_timeout: float = 0.0
    log_format: str = "text"
    log_level: str = "INFO"
    debugger: bool = False
    debugger_port: int = 5678
    pycharm_host: str | None = None
    pycharm_port: int | None = None
    forbid_debugger: bool = False


OPTIONS_CLASSES: tuple[type[Options], ...] = (ServeOptions, ConsumeOptions, CeleryOptions)


def probe_port_of(options: Options) -> int:
    """Where the probe server listens: ``--probe-port``, else (``serve``, whose default
    is None) the app port + 1."""
    if options.probe_port:
        return options.probe_port
    if not isinstance(options, ServeOptions):
        raise TypeError(f"{type(options).__name__} has no probe port and no app port")
    return options.port + 1


def add_arguments(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Declare the options on an argparse parser; every default is None so that the
    resolver can tell an option given on the command line from one left out."""
    for option in options:
        if not option.flag_takes_value:
            parser.add_argument(
                option.flag, dest=option.name, action="store_true", default=None, help=option.help
            )
        elif option.repeatable:
            parser.add_argument(
                option.flag,
                dest=option.name,
                action="append",
                default=None,
                metavar=option.metavar,
                help=option.help,
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.name,
                default=None,
                metavar=option.metavar,
                help=option.help,
            )


_MISSING = object()
PREFIX = "HURRICANE_"


@dataclass(frozen=True)
class Given:
    """A value given for an option: by the command line (``name`` is the flag), a
    setting or an environment variable (``name`` is its name)."""

    raw: Any
    kind: str  # "command line", "setting" or "environment"
    name: str
    old: bool = False  # by a name of django-hurricane 1.6 (Option.old_names)

    @property
    def source(self) -> str:
        suffix = ", django-hurricane 1.6's name" if self.old else ""
        return f"{self.kind} {self.name}{suffix}"


def given_values(
    option: Option, command_line: Mapping[str, Any], settings: Any, environ: Mapping[str, str]
) -> Iterator[Given]:
    """Each value given for ``option``, the one that wins first."""
    raw = command_line.get(option.name)
    if raw is not None:
        yield Given(list(raw) if option.repeatable else raw, "command line", option.flag)
    for name in (option.variable, *option.old_names):
        old = name != option.variable
        setting = getattr(settings, name, _MISSING)
        if setting is not _MISSING:
            yield Given(setting, "setting", name, old)
        if name in environ and (name.startswith(PREFIX) or not old):
            yield Given(environ[name], "environment", name, old)


def parse_given(option: Option, raw: Any, source: str) -> Any:
    """``raw`` parsed for ``option`` (None: the default); OptionError if it is bad."""
    if raw is None:
        return option.default
    try:
        return option.parse(raw)
    except ValueError as error:
        expected = str(error) or "a valid value"
        text = raw if isinstance(raw, str) else repr(raw)
        shown = shown_value(option.variable, text)
        if shown != text and mentions(expected, text):
            expected = "a valid value (the complaint would show the secret)"
        raise OptionError(
            f"invalid value {shown!r} for {option.flag} (from {source}): expected {expected}"
        ) from None


def old_name_warning(option: Option, given: Given, winner: str) -> str:
    """The deprecation warning for a value given by a name of django-hurricane 1.6."""
    kind = "environment variable" if given.kind == "environment" else given.kind
    if given.source == winner:
        return (
            f"Deprecated {kind} {given.name} (django-hurricane 1.6's name) sets "
            f"{option.flag}: rename it {option.variable}"
        )
    return (
        f"Deprecated {kind} {given.name} (django-hurricane 1.6's name) is ignored, for "
        f"{option.flag} comes from {winner}: remove it, or rename it {option.variable}"
    )


class Resolved(NamedTuple):
    """What :func:`resolve_values` found: each option's value and where it came from,
    by option name, and the warnings to log."""

    values: dict[str, Any]
    sources: dict[str, str]
    warnings: list[str]


def resolve_values(
    options: Sequence[Option],
    command_line: Mapping[str, Any],
    settings: Any,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Resolve every option: command line, then Django settings, then environment,
    then the names of django-hurricane 1.6 (a safety switch: on from any of them).
    The warnings to log come with the options: one for each 1.6 name given, one for
    each HURRICANE_* setting or variable that nothing reads. Any table, or part of one."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    for option in options:
        given = list(given_values(option, command_line, settings, environ))
        deciding = given if option.on_from_any_source else given[:1]
        parsed = [(parse_given(option, each.raw, each.source), each.source) for each in deciding]
        if not parsed:
            parsed = [(option.default, "default")]
        values[option.name], sources[option.name] = next(
            (found for found in parsed if found[0] is True), parsed[0]
        )
        warnings += [
            old_name_warning(option, each, sources[option.name]) for each in given if each.old
        ]
    warnings += unknown_names((name for name in dir(settings) if name.isupper()), "setting")
    warnings += unknown_names(environ, "environment variable")
    return Resolved(values, sources, warnings)


def resolve(
    options: Sequence[Option],
    command_line: Mapping[str, Any],
    settings: Any,
    environ: Mapping[str, str] | None = None,
) -> Options:
    """:func:`resolve_values` for the table of a command, as its options class:
    :class:`ServeOptions` for :data:`SERVE_OPTIONS`, :class:`ConsumeOptions` for
    :data:`CONSUME_OPTIONS` (or for a table naming the same options). TypeError for a
    table of other options: :func:`resolve_values` resolves those."""
    names = {option.name for option in options}
    for options_class in OPTIONS_CLASSES:
        if names == {option.name for option in options_class.option_table}:
            return options_class.of(resolve_values(options, command_line, settings, environ))
    raise TypeError(
        "no options class has exactly these options (resolve_values resolves any): "
        + ", ".join(sorted(names))
    )


# HURRICANE_* names that are no option, and so no misspelling of one either.
OTHER_NAMES = frozenset(
    {
        "HURRICANE_VERSION",  # a setting: the version the webhooks report
        "HURRICANE_FROM_FILES",  # what the image's entrypoint read from files (masking)
        "HURRICANE_INHERITED_SOCKETS",  # listeners handed on to an in-place restart
        "HURRICANE_PROCESS_INDEX",  # a serving process of --processes
        "HURRICANE_PROCESS_DIR",
        "HURRICANE_APP_DIR",  # the image's entrypoint's own
        "HURRICANE_CELERY_APP",  # the entrypoint's: the Celery app of celery-worker/-beat
        "HURRICANE_FILE_VARS",
        "HURRICANE_IMAGE_CACHE",  # image/podman's, on a developer's machine
        "HURRICANE_DRY_RUN",  # print what serve/consume would do (hurricane.config.plan)
    }
)
KNOWN_NAMES = OTHER_NAMES | {
    option.variable for option in (*SERVE_OPTIONS, *CONSUME_OPTIONS, *CELERY_OPTIONS)
}
OLD_NAMES = frozenset(
    name for option in SERVE_OPTIONS for name in option.old_names if name.startswith(PREFIX)
)


def closest_name(name: str) -> str | None:
    """The known HURRICANE_* name closest to ``name``, if one is close (compared
    without the prefix, which every candidate shares)."""
    candidates = {known.removeprefix(PREFIX): known for known in KNOWN_NAMES}
    found = difflib.get_close_matches(name.upper().removeprefix(PREFIX), candidates, 1, 0.6)
    return candidates[found[0]] if found else None


def unknown_names(names: Iterable[str], kind: str) -> list[str]:
    """A warning for each name in ``names`` that begins with HURRICANE_ (in any case)
    and that no part of Hurricane reads, naming the known one closest to it. ``kind``:
    "setting" or "environment variable"."""
    warnings = []
    for name in sorted(names):
        if not name.upper().startswith(PREFIX) or name in KNOWN_NAMES or name in OLD_NAMES:
            continue
        read_from = name.removesuffix("_FILE")
        if kind == "environment variable" and read_from != name and read_from in KNOWN_NAMES:
            warnings.append(
                f"Environment variable {name} is not read: the image's entrypoint reads "
                f"<NAME>_FILE variables; here, set {read_from} itself"
            )
            continue
        closest = closest_name(name)
        hint = f"; did you mean {closest}?" if closest else ""
        warnings.append(f"Unknown {kind} {name}: Hurricane does not read it{hint}")
    return warnings


def described_option(options: Options, name: str) -> str:
    """``--interface, from environment HURRICANE_INTERFACE``: the flag, and where its
    value came from unless it is the default, for an error that names it."""
    flag = "--" + name.replace("_", "-")
    source = options.sources.get(name, "default")
    return flag if source == "default" else f"{flag}, from {source}"
