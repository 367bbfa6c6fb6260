"""What the autoscaling components of k8s-manifests/ scale the web pods on, measured
on a real ``serve``: hurricane_http_requests_in_flight counts every request a pod
holds, those waiting for a worker thread (hurricane_http_request_backlog) among
them, so the components' queries take it alone; adding the backlog would count each
waiting request twice."""

from __future__ import annotations

import concurrent.futures

import requests
from test_metrics_webhooks import scrape_until, value_of


def test_requests_in_flight_include_those_waiting_for_a_worker(serve, tmp_path) -> None:
    server = serve("--workers", "1", "--max-workers", "1", "--req-queue-len", "10")
    gate = tmp_path / "open"
    with concurrent.futures.ThreadPoolExecutor(3) as executor:
        held = [
            executor.submit(requests.get, server.url(f"/gate/?file={gate}"), timeout=40)
            for _ in range(3)
        ]
        # One request holds the only worker thread, two wait for it.
        samples = scrape_until(
            server,
            lambda samples: value_of(samples, "hurricane_http_request_backlog") == 2,
            "two requests waiting for the worker",
        )
        assert value_of(samples, "hurricane_http_requests_in_flight") == 3
        gate.touch()
        assert [future.result().status_code for future in held] == [200] * 3
    samples = scrape_until(
        server,
        lambda samples: value_of(samples, "hurricane_http_requests_in_flight") == 0,
        "the requests to end",
    )
    assert value_of(samples, "hurricane_http_request_backlog") == 0
