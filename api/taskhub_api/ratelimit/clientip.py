"""The client's address: the peer, or, behind trusted proxies, from X-Forwarded-For.

Each trusted proxy appends the address it received the request from, so the chain is
read from the right and the first address that is not a trusted proxy is the client.
Anything left of it was written by the client and is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddressResolver:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._networks = [ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies]

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self._networks)

    def resolve(self, peer: str | None, forwarded_for: Iterable[str]) -> str:
        if not peer:
            return "unknown"
        current = _address(peer)
        if current is None or not self._trusted(current):
            return peer
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:  # garbage passed on by a trusted proxy: stop there
                break
            current = address
            if not self._trusted(address):
                break
        return str(current)
