"""hurricane.testing, the harness of django-hurricane 1.6's API: real servers started,
read and stopped by its drivers and test cases; what they take for a busy port."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from conftest import TEST_PROJECT, base_env, free_port
from hurricane.testing.actors import HTTPClient
from hurricane.testing.drivers import BusyPortException, HurricaneBaseDriver, HurricaneServerDriver


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


def test_the_harness_starts_a_server_reads_its_output_and_stops_it(tmp_path, monkeypatch):
    monkeypatch.chdir(TEST_PROJECT)
    for key, value in base_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], check=True)
    port = free_port()

    class Driver(HurricaneServerDriver):
        ports = (port, port + 1)

    driver = Driver()
    driver.start_server(["--port", str(port)], coverage=False, env={"HURRICANE_MEDIA": "1"})
    try:
        # start_server returned once the server serves: no wait needed.
        assert driver.get_server_host_port() == ("localhost", port)
        assert driver.get_server_host_port(probe_port=True) == ("localhost", port + 1)
        response = HTTPClient("localhost", port).get("/hello/")
        assert (response.status, response.text) == (200, "Hello from Hurricane")
        assert HTTPClient("localhost", port + 1).post("/ready", None).status == 200
        output, _ = driver.get_output(read_all=True)
        assert "Tornado-powered Django web server" in output
        assert "Serving media files under /media/" in output  # the env reached it
        assert "200 GET /hello/" in output
    finally:
        driver.stop_server()
    assert driver.proc.returncode == 0
    with socket.socket() as sock:  # the stop waited: the port is free again
        sock.bind(("127.0.0.1", port))


def test_the_harness_test_case_runs_a_1_6_style_test(tmp_path):
    """A test module written for 1.6 (cycle_server with args and env, app_client,
    probe_client), run by Django's test runner against our test project."""
    port = free_port()
    module = tmp_path / "legacy_tests.py"
    module.write_text(
        "from hurricane.testing import HurricanServerTest\n"
        "from hurricane.testing.drivers import HurricaneServerDriver\n\n"
        "class Driver(HurricaneServerDriver):\n"
        f"    ports = ({port}, {port + 1})\n\n"
        "class LegacyTests(HurricanServerTest):\n"
        "    driver = Driver\n\n"
        f"    @HurricanServerTest.cycle_server(args=['--port', '{port}'], coverage=False,\n"
        "                                     env={'HURRICANE_MAX_LIFETIME': '5'})\n"
        "    def test_serves(self):\n"
        "        self.assertEqual(self.app_client.get('/hello/').status, 200)\n"
        "        self.assertEqual(self.probe_client.get('/alive').status, 200)\n"
        "        out, _ = self.driver.get_output(read_all=True)\n"
        "        self.assertIn('Starting HTTP Server on port', out)\n"
    )
    env = base_env(tmp_path, PYTHONPATH=f"{tmp_path}{os.pathsep}{base_env(tmp_path)['PYTHONPATH']}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=TEST_PROJECT, env=env,
                   check=True)  # fmt: skip
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "legacy_tests", "-v", "2"],
        cwd=TEST_PROJECT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"test_serves .* ok", result.stderr), result.stderr
