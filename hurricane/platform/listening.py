"""Where the servers listen: ``--app-interface`` for the app, ``--interface`` for the
probes, each a host name or address, by default every interface.

- no interface (the default): ``0.0.0.0`` and ``::``, two sockets (the IPv6 one
  IPv6-only, so that both can hold the port); where the machine has no IPv6, the
  IPv4 one alone. A pod's kubelet reaches the probes on the pod IP, whichever family.
- ``::``: one dual-stack socket; IPv4 clients arrive as ``::ffff:a.b.c.d`` where
  the system allows it (on Linux, always: the socket clears IPV6_V6ONLY itself).
- an address (``127.0.0.1``, ``::1``, ``[::1]``): that address only.
- a host name: every address it resolves to (``localhost``: 127.0.0.1 and ::1). An
  address of the name that this machine cannot bind (``::1`` where IPv6 is off) is
  skipped with a warning, as long as another one binds.

Every failure is a :class:`ListenError` whose message is one line naming the port
or the address and the option it came from.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket

from hurricane.config.options import Options, described_option
from hurricane.platform.startup import StartupError

logger = logging.getLogger("hurricane.server.general")

# Connections the kernel queues for accept(): Tornado's default, kept.
LISTEN_BACKLOG = 128
# Errors meaning "this machine cannot bind that address" (not on an interface, or
# its family is off).
UNAVAILABLE = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT)


class ListenError(Exception):
    """A port or an address that cannot be listened on; the message is one line."""


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def shown_address(address: str) -> str:
    """An address as it is written next to a port: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{shown_address(host)}:{port}"


def urls_of(sockets: list[socket.socket]) -> str:
    """Where the sockets listen, for the start-up log: ``http://0.0.0.0:8000, http://[::]:8000``."""
    return ", ".join(url_of(sock) for sock in sockets)


def addresses_for(host: str | None, port: int, host_option: str) -> list[tuple[int, tuple]]:
    """The (family, socket address) pairs to bind for ``host`` on ``port``."""
    if host is None:
        pairs: list[tuple[int, tuple]] = [(socket.AF_INET, ("0.0.0.0", port))]
        if socket.has_ipv6:
            pairs.append((socket.AF_INET6, ("::", port, 0, 0)))
        return pairs
    flags = socket.AI_PASSIVE | (socket.AI_NUMERICHOST if is_address(host) else 0)
    try:
        found = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, flags)
    except socket.gaierror as error:
        raise ListenError(f"cannot resolve {host!r} ({host_option}): {error.strerror}") from None
    pairs = []
    for family, _, _, _, address in found:
        if (family, address) not in pairs and family in (socket.AF_INET, socket.AF_INET6):
            pairs.append((family, address))
    if not pairs:
        raise ListenError(f"{host!r} ({host_option}) has no IPv4 or IPv6 address")
    return pairs


def open_listener(family: int, address: tuple, dual_stack: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A restarted server must get its port back while old connections linger in
        # TIME_WAIT; it does not let two servers share a port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
            except OSError:
                pass  # a system without dual-stack sockets: IPv6 only, as it must be
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listeners(
    host: str | None, port: int, port_option: str, host_option: str, warn: bool = True
) -> list[socket.socket]:
    """Listening sockets for every address of ``host`` (None: every interface) on
    ``port``; ListenError when one cannot be had. ``warn``: log the addresses of a
    host name that are skipped."""
    pairs = addresses_for(host, port, host_option)
    # A name may resolve to an address this machine lacks (::1 with IPv6 off), and
    # "every interface" includes :: only where IPv6 is on; a literal address must bind.
    may_skip = host is None or not is_address(host)
    sockets: list[socket.socket] = []
    try:
        for family, address in pairs:
            dual_stack = family == socket.AF_INET6 and host is not None and address[0] == "::"
            try:
                sockets.append(open_listener(family, address, dual_stack))
            except OSError as error:
                if may_skip and error.errno in UNAVAILABLE:
                    if host is not None and warn:
                        logger.warning(
                            "Not listening on %s (%s, from %r): %s",
                            shown_address(address[0]),
                            host_option,
                            host,
                            error.strerror,
                        )
                    continue
                raise ListenError(
                    failure_message(error, address[0], port, port_option, host_option)
                ) from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise ListenError(
            f"cannot listen on {host!r} ({host_option}): none of its addresses "
            f"({', '.join(shown_address(a[0]) for _, a in pairs)}) is on this machine"
        )
    return sockets


def failure_message(
    error: OSError, address: str, port: int, port_option: str, host_option: str
) -> str:
    where = shown_address(address)
    if error.errno == errno.EADDRINUSE:
        return f"port {port} ({port_option}) is already in use on {where}"
    if error.errno in UNAVAILABLE:
        return f"cannot listen on {where} ({host_option}): not an address of this machine"
    if error.errno == errno.EACCES and port < 1024:
        return (
            f"cannot listen on port {port} ({port_option}): ports below 1024 need "
            "privileges this process does not have"
        )
    return f"cannot listen on {where} port {port} ({port_option}): {error.strerror}"


def check_port_free(host: str | None, port: int, port_option: str, host_option: str) -> None:
    """Raise ListenError when ``port`` on ``host`` cannot be bound now (taken, an
    address that is not here, a name that does not resolve): before start-up tasks
    that would run in vain, or for a server that binds where we cannot see (debugpy's
    adapter process)."""
    for sock in bind_listeners(host, port, port_option, host_option, warn=False):
        sock.close()


# Listening sockets handed to the next process by an in-place restart, as
# "port=fd,port=fd"; the next process serves them without start-up tasks.
INHERITED_SOCKETS_VARIABLE = "HURRICANE_INHERITED_SOCKETS"


def bind_port(
    port: int,
    option: str,
    inherited: dict[int, list[socket.socket]],
    interface: str | None = None,
    interface_option: str = "--interface",
) -> list[socket.socket]:
    """Listening sockets for ``port`` on ``interface`` (None: every interface), or
    those a previous process handed on for it; StartupError in one line if not."""
    if port in inherited:
        return inherited.pop(port)
    try:
        return bind_listeners(interface, port, option, interface_option)
    except ListenError as error:
        raise StartupError(str(error)) from None


def bind_probe_port(
    options: Options, port: int, inherited: dict[int, list[socket.socket]]
) -> list[socket.socket]:
    """The probe server's sockets (serve's and consume's): ``--interface`` on ``port``."""
    return bind_port(
        port, "--probe-port", inherited, options.interface, described_option(options, "interface")
    )


def hand_on_sockets(handed: list[tuple[int, socket.socket]]) -> dict[str, str]:
    """The environment that lets a process started next serve these listening
    sockets (every address of a port: 0.0.0.0 and [::] both); inheritable from now."""
    for _, sock in handed:
        sock.set_inheritable(True)
    value = ",".join(f"{port}={sock.fileno()}" for port, sock in handed)
    return {INHERITED_SOCKETS_VARIABLE: value}


def inherited_sockets() -> dict[int, list[socket.socket]]:
    sockets: dict[int, list[socket.socket]] = {}
    for item in os.environ.pop(INHERITED_SOCKETS_VARIABLE, "").split(","):
        if "=" in item:
            port, fd = item.split("=")
            sock = socket.socket(fileno=int(fd))
            sock.setblocking(False)
            sockets.setdefault(int(port), []).append(sock)
    return sockets
