"""SSRF guard: which webhook URLs may be delivered to, and where exactly.

Checked when a webhook is created and at every delivery. :func:`check_url` parses the
URL strictly (one canonical reading, so no other parser can see another host), resolves
the host once, vets every address (see :mod:`.addresses`) and returns them: the
delivery connects to those addresses and to no other (:mod:`.transport`), so a name
that resolves elsewhere a moment later (DNS rebinding) changes nothing.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from taskhub_api.addresses import IPAddress, IPNetwork, normalise, refusal

# A host whose last label is a number (decimal, or 0x hex) is an IPv4 address to URL
# parsers and to inet_aton, in every spelling: 2130706433, 0177.0.0.1, 0x7f.1, 127.1.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class UnsafeUrl(Exception):
    pass


class Resolver(Protocol):
    async def __call__(self, host: str, port: int) -> Sequence[str]:
        """Every address ``host`` resolves to, as strings."""
        ...


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    """A vetted URL: its host as written (the Host header and TLS server name) and the
    addresses a delivery may connect to, in the resolver's order."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def _literal_host(host: str) -> IPAddress | None:
    """The address of an IP-literal host; ``None`` for a DNS name. Raises for a
    numeric host in any but the canonical dotted-quad spelling."""
    if ":" in host:  # urlsplit took it out of [brackets]
        if "%" in host:
            raise UnsafeUrl("must not contain an IPv6 zone identifier")
        try:
            return IPv6Address(host)
        except ValueError as exc:
            raise UnsafeUrl("has an invalid IPv6 address") from exc
    last = host.rstrip(".").rsplit(".", 1)[-1] if host.rstrip(".") else host
    if not _NUMERIC_LABEL.match(last):
        return None
    try:
        address = IPv4Address(host)  # rejects leading zeros, short and integer forms
    except ValueError:
        address = None
    if address is None or str(address) != host:
        raise UnsafeUrl(
            "has a non-canonical numeric host; write an IPv4 address as four decimal "
            "numbers (a.b.c.d) or use a DNS name"
        )
    return address


def _same_host(seen: str, host: str, literal: IPAddress | None) -> bool:
    if literal is None or literal.version == 4:
        return seen == host
    try:  # IPv6: any spelling of the same address
        return ip_address(seen.strip("[]")) == literal
    except ValueError:
        return False


def _parse(url: str) -> tuple[str, str, int, IPAddress | None]:
    if any(not 0x21 <= ord(c) <= 0x7E for c in url):
        raise UnsafeUrl("must be printable ASCII without spaces (percent-encode the rest)")
    if "\\" in url:
        raise UnsafeUrl("must not contain backslashes")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("must be an http or https URL with a host")
    if "@" in parts.netloc:
        raise UnsafeUrl("must not contain credentials")
    host = parts.hostname
    try:
        given = parts.port
    except ValueError as exc:
        raise UnsafeUrl("has an invalid port") from exc
    if given == 0:
        raise UnsafeUrl("has an invalid port")
    port = given or (443 if scheme == "https" else 80)
    literal = _literal_host(host)
    # The client must read the same host and port out of the URL.
    try:
        seen = httpx.URL(url)
        seen_host = seen.raw_host.decode("ascii").lower()
    except (httpx.InvalidURL, UnicodeDecodeError) as exc:
        raise UnsafeUrl("is not a valid URL") from exc
    same_port = (seen.scheme, seen.port or port) == (scheme, port)
    if not (same_port and _same_host(seen_host, host, literal)):
        raise UnsafeUrl("is ambiguous (parsers disagree on its host)")
    return scheme, host, port, literal


async def check_url(
    url: str,
    *,
    allowed_networks: Sequence[IPNetwork] = (),
    resolver: Resolver | None = None,
    resolve_timeout: float = 5.0,
) -> Target:
    """The vetted target of ``url``; raises :class:`UnsafeUrl` (with a reason for the
    client) unless it is an http(s) URL whose host resolves only to addresses
    deliveries may reach: globally reachable ones, or inside ``allowed_networks``."""
    scheme, host, port, literal = _parse(url)
    if literal is not None:
        found: list[IPAddress] = [literal]
    else:
        name = host.rstrip(".")
        if len(name) > 253 or not all(_DNS_LABEL.match(label) for label in name.split(".")):
            raise UnsafeUrl("has a host that is neither an IP address nor a DNS name")
        try:
            async with asyncio.timeout(resolve_timeout):
                answers = await (resolver or system_resolver)(host, port)
            found = [ip_address(a.split("%", 1)[0]) for a in answers]
        except (OSError, TimeoutError, ValueError) as exc:
            raise UnsafeUrl(f"host {host!r} cannot be resolved") from exc
        if not found:
            raise UnsafeUrl(f"host {host!r} cannot be resolved")
    refused = {str(a): why for a in found if (why := refusal(a, allowed_networks)) is not None}
    if refused:
        listed = ", ".join(f"{a}: {why}" for a, why in sorted(refused.items()))
        raise UnsafeUrl(
            f"resolves to a loopback, private, link-local or otherwise internal address "
            f"({listed}); such targets are not allowed"
        )
    addresses = tuple(dict.fromkeys(normalise(a) for a in found))
    return Target(url=url, scheme=scheme, host=host, port=port, addresses=addresses)
