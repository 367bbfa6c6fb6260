"""What a long X-Forwarded-For chain from a trusted peer costs a request.

A client behind a trusted proxy can make the chain as long as the header limit
allows (64 KB: about 6,000 entries). This prints:

- the time the rule itself takes per request (``TrustedProxies.client_and_scheme``,
  run on the event loop), for such a chain of trusted addresses and for a chain of
  two;
- the median latency of ``GET /plain`` on ``manage.py serve`` (bench/webproject,
  this checkout's Hurricane) with that chain, with a header of the same size under
  another name (what any 64 KB header costs), and with a chain of two.

    python bench/forwarded_chain.py
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import timeit
from pathlib import Path

from servers import PROJECT, ROOT, Server, migrate

sys.path.insert(0, str(ROOT))

from tornado.httputil import HTTPHeaders  # noqa: E402

from hurricane.http.forwarded import TrustedProxies  # noqa: E402

TRUSTED = "10.0.0.0/8,127.0.0.1"
ENTRIES = 6000
# Distinct addresses, as an attacker would send them: each one is a new look-up.
LONG_CHAIN = ",".join(["203.0.113.7", *(f"10.{i // 100}.{i % 100}.1" for i in range(ENTRIES))])
SHORT_CHAIN = "203.0.113.7, 10.0.0.2"


def rule_seconds(chain: str, allow: str, number: int) -> float:
    proxies = TrustedProxies.parse(allow)
    assert proxies is not None
    headers = HTTPHeaders({"X-Forwarded-For": chain})
    runs = timeit.repeat(
        lambda: proxies.client_and_scheme("10.0.0.1", "http", headers), number=number, repeat=5
    )
    return min(runs) / number


def median_latency(port: int, headers: dict[str, str], requests: int) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    took = []
    try:
        for _ in range(requests):
            began = timeit.default_timer()
            connection.request("GET", "/plain", headers=headers)
            response = connection.getresponse()
            response.read()
            took.append(timeit.default_timer() - began)
            assert response.status == 200, response.status
    finally:
        connection.close()
    return statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per header (default 300)")
    args = parser.parse_args()

    print(f"chain of {ENTRIES} trusted entries: {len(LONG_CHAIN)} bytes")
    for allow in ("*", TRUSTED):
        print(f"  rule, trusting {allow}: {rule_seconds(LONG_CHAIN, allow, 20) * 1e3:.3f} ms")
    print(f"  rule, chain of two: {rule_seconds(SHORT_CHAIN, TRUSTED, 20000) * 1e6:.1f} µs")

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        migrate(workdir)
        server = Server(
            "hurricane",
            workdir,
            extra_env={
                "PYTHONPATH": f"{ROOT}:{PROJECT}",
                "HURRICANE_FORWARDED_ALLOW_IPS": TRUSTED,
            },
        )
        server.start()
        try:
            for what, headers in (
                ("the long chain", {"X-Forwarded-For": LONG_CHAIN}),
                ("a header as large", {"X-Padding": LONG_CHAIN}),
                ("a chain of two", {"X-Forwarded-For": SHORT_CHAIN}),
            ):
                seconds = median_latency(server.port, headers, args.requests)
                print(f"  GET /plain with {what}: median {seconds * 1e3:.2f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
