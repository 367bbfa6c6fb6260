"""The app and its probes answer as DESIGN.md says."""

import pytest
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


def test_debug_logs_where_each_option_came_from(serve):
    server = serve("--debug", "--req-queue-len", "7", env={"HURRICANE_WORKERS": "3"})
    assert requests.get(server.url("/hello/")).status_code == 200
    assert "Option req_queue_len = 7 (from command line --req-queue-len)" in server.output
    assert "Option workers = 3 (from environment HURRICANE_WORKERS)" in server.output
    quiet = serve("--req-queue-len", "7")
    assert "Option req_queue_len" not in quiet.output


def test_max_buffer_size_bounds_what_a_connection_may_buffer(serve):
    big_header = {"X-Custom": "x" * 4000}
    roomy = serve()
    assert requests.get(roomy.url("/meta/"), headers=big_header).json()["x_custom"] == "x" * 4000
    tight = serve("--max-buffer-size", "2k")
    with pytest.raises(requests.ConnectionError):
        requests.get(tight.url("/meta/"), headers=big_header)
    assert requests.get(tight.url("/hello/")).status_code == 200
