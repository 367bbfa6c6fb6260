"""Which proxies' ``X-Forwarded-For`` / ``X-Forwarded-Proto`` headers are believed.

Behind an ingress, the peer of every connection is the ingress, and the client's
address and scheme arrive in headers. Any client can send those headers too, so
they are believed only when the direct peer is a trusted proxy
(``--forwarded-allow-ips``); by default no one is trusted and the headers change
nothing.

The client is found by walking ``X-Forwarded-For`` from the right, the end that
the nearest proxy appended to: each trusted address is a proxy that passed the
request on, the first untrusted one is the client. Whatever lies to the left of
the client was sent by the client itself and is ignored, so a client cannot
pretend to be someone else by prepending addresses.

Used by both the WSGI and the ASGI bridge. With no one trusted, the bridges hold
``None`` instead of a :class:`TrustedProxies` and skip this module per request.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from hurricane.config.options import ProxyNetworks, parse_forwarded_allow_ips

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https"})
# Distinct peers whose trust is remembered: the ingress pods of a cluster are few.
TRUST_CACHE_SIZE = 1024
# The X-Forwarded-For entries looked at, from the right. Real chains are a CDN, a
# load balancer, an ingress and maybe a sidecar; far more trusted hops than this are
# a client's invention, and each one looked at costs microseconds of the event loop.
MAX_FORWARDED_HOPS = 16
# An IPv6 zone id (the interface after "%" in fe80::1%eth0) as REMOTE_ADDR may carry
# it: an interface name or number, at most as long as Linux allows one (15). Python
# accepts any text there, which a log or a database would then receive as an address.
ZONE_ID = re.compile(r"[A-Za-z0-9_.~-]{1,15}")


class TrustedProxies:
    """The peers whose forwarding headers are believed: networks, or everyone (``*``)."""

    def __init__(self, networks: Iterable[IPNetwork] = (), everyone: bool = False) -> None:
        self.networks = tuple(networks)
        self.everyone = everyone
        # Per peer address, so the hot path is a dict look-up after the first request.
        self.trusts = functools.lru_cache(maxsize=TRUST_CACHE_SIZE)(self._trusts)

    @classmethod
    def of(cls, allowed: ProxyNetworks | None) -> TrustedProxies | None:
        """For the resolved ``--forwarded-allow-ips``; None when it names no one."""
        return None if allowed is None else cls(allowed.networks, allowed.everyone)

    @classmethod
    def parse(cls, value: Any) -> TrustedProxies | None:
        """From the option's value (see hurricane.config.options.parse_forwarded_allow_ips)."""
        return cls.of(parse_forwarded_allow_ips(value))

    def __repr__(self) -> str:
        if self.everyone:
            return "TrustedProxies(*)"
        return f"TrustedProxies({', '.join(str(network) for network in self.networks)})"

    def _trusts(self, address: str) -> bool:
        if self.everyone:
            return True
        ip = parse_address(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client_and_scheme(self, peer: str, scheme: str, headers: Any) -> tuple[str, str]:
        """The client's address and the request's scheme, given the connection's peer
        address and scheme and the request's headers (Tornado ``HTTPHeaders``)."""
        if not self.trusts(peer):
            return peer, scheme
        forwarded_for = headers.get_list("X-Forwarded-For")
        if forwarded_for:
            # Each line holds one entry or more: the last lines hold all that is looked at.
            peer = self.client_of(",".join(forwarded_for[-MAX_FORWARDED_HOPS:]), peer)
        forwarded_proto = headers.get_list("X-Forwarded-Proto")
        if forwarded_proto:
            # The nearest proxy appended the last value; it is the one that saw the
            # scheme the hop before it used.
            nearest = ",".join(forwarded_proto).rsplit(",", 1)[-1].strip().lower()
            if nearest in SCHEMES:
                scheme = nearest
        return peer, scheme

    def client_of(self, forwarded_for: str, peer: str) -> str:
        """Walk the comma-separated chain from the right past trusted proxies. The first
        untrusted address is the client; when every address is trusted, the leftmost.
        An entry that is no address ends the walk: nothing to its left can be vouched
        for, so the last address believed so far stands. So does the
        :data:`MAX_FORWARDED_HOPS`-th entry when it is trusted: the walk ends there, and
        the header is split no further than that."""
        client = peer
        # Split off only what is looked at; the rest of a long header stays one piece.
        entries = forwarded_for.rsplit(",", MAX_FORWARDED_HOPS)[-MAX_FORWARDED_HOPS:]
        for entry in reversed(entries):
            ip = parse_address(entry)
            if ip is None:
                break
            client = str(ip)
            if not self.trusts(client):
                break
        return client


def parse_address(entry: str) -> IPAddress | None:
    """An address as proxies write it in ``X-Forwarded-For``: ``192.0.2.1``,
    ``2001:db8::1``, or with a port: ``192.0.2.1:4711``, ``[2001:db8::1]:4711``; an
    IPv6 address may name its zone (``fe80::1%eth0``, see :data:`ZONE_ID`).
    IPv4-mapped IPv6 addresses count as the IPv4 address. ``None`` if not an address."""
    entry = entry.strip()
    port = None
    if entry.startswith("["):
        entry, bracket, after = entry[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return None
        port = after[1:] if after else None
    elif entry.count(":") == 1:  # IPv4 with a port; an IPv6 address has two or more
        entry, _, port = entry.partition(":")
    if port is not None and not port.isdigit():
        return None
    try:
        ip = ipaddress.ip_address(entry)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None and not ZONE_ID.fullmatch(ip.scope_id):
            return None
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
    return ip
