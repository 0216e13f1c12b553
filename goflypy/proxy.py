"""The client's real address behind a reverse proxy.

X-Forwarded-For is anyone's to write, so it is believed only when the
connection comes from a configured proxy, and only as far back as the
chain stays within configured proxies: the first address from the right
that is not one of them is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .config import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The ``trusted_proxies`` setting, parsed."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: list[Network] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"setting 'trusted_proxies': {entry!r} is not an address or network"
                ) from None

    def __bool__(self) -> bool:
        return bool(self.networks)

    def is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_of(self, remote: str, forwarded_for: Iterable[str]) -> str:
        """The client address for a request from ``remote`` with these headers."""
        if not self.is_trusted(remote):
            return remote
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
        client = remote
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage in the chain: trust nothing before it
            client = hop
            if not self.is_trusted(hop):
                break
        return client


def real_ip_middleware(proxies: TrustedProxies) -> Middleware:
    """Middleware giving handlers the client's address as ``request.remote``."""

    @web.middleware
    async def real_ip(request: web.Request, handler: Handler) -> web.StreamResponse:
        remote = request.remote
        forwarded = request.headers.getall("X-Forwarded-For", ())
        if remote and forwarded:
            client = proxies.client_of(remote, forwarded)
            if client != remote:
                request = request.clone(remote=client)
        return await handler(request)

    return real_ip
