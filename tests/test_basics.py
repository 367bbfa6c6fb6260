"""The app and its probes answer as DESIGN.md says."""

import requests

from conftest import port_open


def test_app_and_probes_answer(serve):
    server = serve()
    response = requests.get(server.url("/hello/"))
    assert response.status_code == 200
    assert response.text == "Hello from Hurricane"
    for path in ("/startup", "/ready", "/alive", "/startup/", "/ready/", "/alive/"):
        for method in ("GET", "HEAD", "POST"):
            probe = requests.request(method, server.probe(path))
            assert probe.status_code == 200, (method, path, probe.text)
            assert probe.headers["Cache-Control"] == "no-store"
    metrics = requests.get(server.probe("/metrics"))
    assert metrics.status_code == 200
    assert "request_counter_total 1.0" in metrics.text
    assert "Hello" not in requests.get(server.probe("/hello/")).text
    assert "200 GET /hello/" in server.output


def test_no_probe_leaves_probe_port_closed(serve):
    server = serve("--no-probe")
    assert requests.get(server.url("/hello/")).status_code == 200
    assert not port_open(server.port + 1)
