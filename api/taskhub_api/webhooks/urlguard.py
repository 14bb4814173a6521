"""SSRF guard: webhook URLs must resolve to public addresses only.

Checked when a webhook is created and again before every delivery (the name may
resolve elsewhere later). Loopback, private, link-local (which includes the cloud
metadata address 169.254.169.254), shared, reserved and multicast addresses are all
refused unless ``webhooks.allow_private_networks`` is set (tests, local development).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeUrl(Exception):
    pass


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


async def check_url(url: str, *, allow_private: bool, resolve_timeout: float = 5.0) -> None:
    """Raises :class:`UnsafeUrl` (with a reason for the client) unless ``url`` is an
    http(s) URL whose host resolves only to addresses deliveries may reach."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("must be an http or https URL with a host")
    if parts.username or parts.password:
        raise UnsafeUrl("must not contain credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeUrl("has an invalid port") from exc
    if allow_private:
        return
    host = parts.hostname
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            async with asyncio.timeout(resolve_timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError) as exc:
            raise UnsafeUrl(f"host {host!r} cannot be resolved") from exc
        addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    blocked = sorted(str(a) for a in addresses if _refused(a))
    if blocked:
        raise UnsafeUrl(
            f"resolves to a loopback, private, link-local or otherwise internal address "
            f"({', '.join(blocked)}); such targets are not allowed"
        )
