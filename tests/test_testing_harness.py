"""hurricane.testing, the harness of django-hurricane 1.6's API: what its drivers
take for a busy port, on real sockets."""

from __future__ import annotations

import socket

import pytest

from conftest import free_port
from hurricane.testing.drivers import BusyPortException, HurricaneBaseDriver


def driver_on(port: int) -> type[HurricaneBaseDriver]:
    return type("OnePortDriver", (HurricaneBaseDriver,), {"ports": (port,)})


def test_a_server_connection_in_time_wait_does_not_make_its_port_busy():
    """A server that closed a kept-alive connection first (as a drain does) leaves it
    in TIME_WAIT on its own port for a minute: the next test's server can bind that
    port (servers set SO_REUSEADDR), so the driver must not refuse to start it."""
    port = free_port()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    served, _ = listener.accept()
    served.close()  # the server's side closes first ...
    assert client.recv(1) == b""
    client.close()  # ... and, once the client has closed too, waits in TIME_WAIT
    listener.close()

    driver_on(port)()  # no BusyPortException

    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("0.0.0.0", port))
        taken.listen()
        with pytest.raises(BusyPortException, match=f"Port {port} already in use."):
            driver_on(port)()
