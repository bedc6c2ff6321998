"""Who is on the other end of a call: client IP (from the transport, or the gateway's x-forwarded-for when the peer
is a trusted proxy) and user agent. Never taken from request fields, which any client can fill in."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import grpc

from services.account.sessions import ClientInfo

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(networks: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(network, strict=False) for network in networks]


def peer_address(peer: str) -> Address | None:
    """The IP of a gRPC peer string ("ipv4:10.1.2.3:5555", "ipv6:[::1]:5555"); None for unix sockets and the like."""
    kind, _, rest = peer.partition(":")
    try:
        if kind == "ipv4":
            return ipaddress.ip_address(rest.rsplit(":", 1)[0])
        if kind == "ipv6":
            return ipaddress.ip_address(rest.rsplit(":", 1)[0].strip("[]").split("%")[0])
    except ValueError:
        return None
    return None


def _trusted(address: Address | None, trusted: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_address(peer: str, forwarded_for: str, trusted: Sequence[Network]) -> str:
    """The client IP: the peer, unless the peer is a trusted proxy; then the right-most x-forwarded-for entry that is
    not itself a trusted proxy (entries left of it could be forged by the client)."""
    address = peer_address(peer)
    if _trusted(address, trusted) and forwarded_for:
        for entry in reversed([part.strip() for part in forwarded_for.split(",")]):
            try:
                hop = ipaddress.ip_address(entry)
            except ValueError:
                break
            if not _trusted(hop, trusted):
                return str(hop)
            address = hop
    return "" if address is None else str(address)


def client_info(
    context: grpc.aio.ServicerContext[Any, Any],
    trusted: Sequence[Network],
    *,
    device_name: str = "",
    user_agent: str = "",
) -> ClientInfo:
    """The caller's IP, user agent (the request's, else the call's user-agent metadata) and device name."""
    forwarded = agent = ""
    for key, value in context.invocation_metadata() or ():
        if key == "x-forwarded-for" and isinstance(value, str):
            forwarded = value
        elif key == "user-agent" and isinstance(value, str):
            agent = value
    return ClientInfo(
        ip_address=client_address(context.peer(), forwarded, trusted),
        user_agent=(user_agent or agent)[:512],
        device_name=device_name.strip(),
    )
