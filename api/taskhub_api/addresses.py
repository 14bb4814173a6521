"""Which IP addresses a webhook delivery may connect to.

An address is refused when it is in a range that is never a webhook target (link-local,
cloud metadata services, unspecified, multicast, IPv6 translation and tunnelling
prefixes), whatever ``webhooks.allowed_networks`` says; otherwise it is accepted when
it is globally reachable or inside an allowed network. IPv4-mapped IPv6 addresses are
judged by their IPv4 address; the other forms embedding an IPv4 address are refused,
naming the embedded address.

Standard library only: settings validation imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_network,
)
from typing import TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network


def _table(entries: dict[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ip_network(cidr), why) for cidr, why in entries.items())


# Never targets, whatever the allow-list says. Metadata endpoints first: a more
# specific reason wins when ranges nest.
NEVER: tuple[tuple[IPNetwork, str], ...] = _table(
    {
        "169.254.169.254/32": "cloud metadata service",
        "169.254.170.2/32": "container metadata service (ECS)",
        "100.100.100.200/32": "cloud metadata service (Alibaba Cloud)",
        "192.0.0.192/32": "cloud metadata service (Oracle Cloud)",
        "168.63.129.16/32": "cloud platform endpoint (Azure WireServer)",
        "fd00:ec2::/32": "cloud metadata and instance services (AWS)",
        "0.0.0.0/8": "unspecified or 'this host'",
        "169.254.0.0/16": "link-local",
        "224.0.0.0/4": "multicast",
        "240.0.0.0/4": "reserved or broadcast",
        "::/128": "unspecified",
        "fe80::/10": "link-local",
        "fec0::/10": "site-local (deprecated)",
        "ff00::/8": "multicast",
        "64:ff9b::/96": "NAT64",
        "64:ff9b:1::/48": "local-use NAT64",
        "2002::/16": "6to4",
        "2001::/32": "Teredo",
        "::ffff:0:0:0/96": "IPv4-translated",
    }
)
# Not globally reachable, in case the running Python's ipaddress tables are older than
# the IANA registries (is_global changed in several patch releases).
_NON_GLOBAL = _table(
    {
        "100.64.0.0/10": "shared address space (CGNAT)",
        "192.0.0.0/24": "IETF protocol assignments",
        "198.18.0.0/15": "benchmarking",
        "3fff::/20": "documentation",
        "5f00::/16": "segment routing",
        "fc00::/7": "unique local",
    }
)
_MAPPED = ip_network("::ffff:0:0/96")
_COMPATIBLE = ip_network("::/96")
_LOOPBACK_V6 = ip_network("::1/128")


def _kind(address: IPAddress) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_private:
        return "private"
    for network, why in _NON_GLOBAL:
        if address.version == network.version and address in network:
            return why
    return "reserved or otherwise non-global"


def _never(address: IPAddress) -> str | None:
    for network, why in NEVER:
        if address.version == network.version and address in network:
            return why
    return None


def refusal(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why a delivery must not connect to ``address`` (``None``: it may)."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            inner = refusal(address.ipv4_mapped, allowed)
            return None if inner is None else f"{inner}, as IPv4 {address.ipv4_mapped}"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = refusal(embedded, allowed)
            return f"{embedded_kind(address)} form of {embedded}" + (f", {inner}" if inner else "")
    why = _never(address)
    if why is not None:
        return why
    if any(address.version == n.version and address in n for n in allowed):
        return None
    non_global = not address.is_global or any(
        address.version == n.version and address in n for n, _ in _NON_GLOBAL
    )
    return _kind(address) if non_global else None


def embedded_kind(address: IPv6Address) -> str:
    if address.sixtofour is not None:
        return "6to4"
    if address.teredo is not None:
        return "Teredo"
    if address in ip_network("64:ff9b::/96") or address in ip_network("64:ff9b:1::/48"):
        return "NAT64"
    if address in ip_network("::ffff:0:0:0/96"):
        return "IPv4-translated"
    return "IPv4-compatible"


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address inside the forms that carry one, but IPv4-mapped."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client; the server is public by construction
    low = IPv4Address(int(address) & 0xFFFFFFFF)
    if address in ip_network("64:ff9b::/96") or address in ip_network("::ffff:0:0:0/96"):
        return low
    if address in ip_network("64:ff9b:1::/48"):
        return low
    if address in _COMPATIBLE and int(address) > 1:
        return low
    return None


def normalise(address: IPAddress) -> IPAddress:
    """The address to connect to: an IPv4-mapped address as plain IPv4."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allow_list_problems(networks: Sequence[IPNetwork]) -> list[str]:
    """Entries of ``webhooks.allowed_networks`` that could not mean what they say:
    overlapping a never-allowed range (which stays refused), or written as IPv4-mapped
    IPv6 (matched as IPv4)."""
    problems = []
    for network in networks:
        if network.version == 6 and network.subnet_of(_MAPPED):  # type: ignore[arg-type]
            problems.append(f"{network}: write IPv4-mapped networks as IPv4 networks")
            continue
        if network.version == 6 and network.overlaps(_COMPATIBLE) and network != _LOOPBACK_V6:
            problems.append(
                f"{network} overlaps ::/96 (unspecified and IPv4-compatible addresses), "
                "which is never allowed"
            )
            continue
        clashes = [
            f"{never} ({why})"
            for never, why in NEVER
            if never.version == network.version and network.overlaps(never)
        ]
        if clashes:
            problems.append(
                f"{network} overlaps {'; '.join(clashes)}: never allowed whatever the "
                "allow-list says, so list narrower networks that leave these out"
            )
    return problems
