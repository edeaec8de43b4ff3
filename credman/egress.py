"""Where credman's own HTTP requests may go: an egress policy for token and probe URLs.

A stored credential names URLs that credman itself calls (a token endpoint, a probe), so
whoever can store a credential could otherwise make credman call the cloud metadata
service (``169.254.169.254``), an internal admin port, or anything else inside the
network. :class:`EgressPolicy` decides by the addresses a host resolves to, and refuses
when any of them is not allowed. By default it denies link-local, private (RFC 1918, ULA),
shared (CGNAT), loopback, multicast, unspecified and reserved addresses; ``allow_hosts``
(exact names, or ``*.example.com`` suffixes), ``allow_networks`` (CIDR) and
``allow_loopback`` (for tests and development) open them. Public addresses are allowed
unless ``allow_hosts`` is given and ``only_allowed`` is set.

:class:`EgressTransport` enforces the policy on every request credman sends through its
own client. A refusal is an :class:`EgressDenied` (an ``httpx.ConnectError``) whose message
names the host, never whether anything listens there. The check resolves the name just
before connecting; a resolver that answers differently a moment later (DNS rebinding) is
not covered: pin such hosts with ``allow_hosts``/``only_allowed`` or resolve them yourself.
Configuration: ``CREDMAN_EGRESS_ALLOW`` (comma-separated hosts and CIDRs) and
``CREDMAN_EGRESS_ALLOW_LOOPBACK=1``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import httpx

from credman.errors import CredentialValidationError

__all__ = ["EgressDenied", "EgressPolicy", "EgressTransport"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class EgressDenied(httpx.ConnectError):
    """The egress policy does not allow a request to this host."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressPolicy:
    """Which hosts and networks credman's own requests may reach."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_loopback: bool = False
    only_allowed: bool = False
    resolve: bool = field(default=True, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EgressPolicy:
        """The policy of ``CREDMAN_EGRESS_ALLOW`` and ``CREDMAN_EGRESS_ALLOW_LOOPBACK``."""
        env = os.environ if environ is None else environ
        entries = [e.strip() for e in env.get("CREDMAN_EGRESS_ALLOW", "").split(",") if e.strip()]
        return cls.of(entries, allow_loopback=env.get("CREDMAN_EGRESS_ALLOW_LOOPBACK") == "1")

    @classmethod
    def of(cls, entries: Iterable[str], *, allow_loopback: bool = False) -> EgressPolicy:
        """A policy from host names and CIDR networks mixed."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(_host_entry(entry))
        return cls(
            allow_hosts=frozenset(hosts),
            allow_networks=tuple(networks),
            allow_loopback=allow_loopback,
        )

    def refusal(self, host: str) -> str | None:
        """Why a request to ``host`` is refused, or None when it is allowed."""
        host = host.lower().rstrip(".")
        if self._host_allowed(host):
            return None
        if self.only_allowed:
            return f"egress policy: host {host!r} is not in the allow-list"
        for address in self._addresses(host):
            if not self._address_allowed(address):
                return f"egress policy: host {host!r} resolves to a non-public address"
        return None

    def _host_allowed(self, host: str) -> bool:
        return host in self.allow_hosts or any(
            entry.startswith("*.") and host.endswith(entry[1:]) for entry in self.allow_hosts
        )

    def _addresses(self, host: str) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        if not self.resolve:
            return []
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return []  # the connection will fail on its own, the same way for every host
        return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]

    def _address_allowed(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allow_networks):
            return True
        if address.is_loopback:
            return self.allow_loopback
        return address.is_global and not address.is_multicast and address not in _SHARED


def _host_entry(entry: str) -> str:
    host = entry.lower().rstrip(".")
    name = host.removeprefix("*.")
    if not name or any(not part or len(part) > 63 for part in name.split(".")):
        raise CredentialValidationError(
            f"egress: {entry!r} is neither a host name nor a CIDR network", fields=("egress",)
        )
    return host


class EgressTransport(httpx.BaseTransport):
    """Wraps a transport: a request to a host the policy refuses is never sent."""

    def __init__(self, policy: EgressPolicy, transport: httpx.BaseTransport | None = None):
        self.policy = policy
        self._transport = transport or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Check the host, then send through the wrapped transport."""
        refusal = self.policy.refusal(request.url.host)
        if refusal is not None:
            raise EgressDenied(refusal, request=request)
        return self._transport.handle_request(request)

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()
