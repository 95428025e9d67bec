"""Where a webhook may be sent: public addresses only (no SSRF into the platform's own network).

A webhook URL names a host the platform's worker will connect to, so a tenant could otherwise
point it at the cloud metadata service (169.254.169.254), the database on 10.x, Redis on
127.0.0.1 and read or poke them from inside. Every address a host resolves to must be public:
loopback, private (RFC 1918, unique-local, CGNAT), link-local, multicast, reserved and
unspecified addresses are refused, IPv4-mapped IPv6 forms included.

The check runs at registration (IP literals and names that resolve now) and again at every
delivery after DNS resolution, and the delivery then connects to the very address it checked
(`pinned_post`), so a name that resolves to a public address for the check and to 127.0.0.1 for
the connection (DNS rebinding) cannot get through. Redirects are never followed.

`WEBHOOK_ALLOWED_HOSTS` (settings) lists host names or IP literals an operator allows anyway,
e.g. an internal receiver; tests that deliver to a loopback server use it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings


class AddressRefused(Exception):
    """The host is, or resolves to, an address webhooks may not reach."""

    def __init__(self, host: str, address: str):
        super().__init__(f"{host} resolves to {address}, which is not a public address")
        self.host = host
        self.address = address


def address_is_public(address: str) -> bool:
    """True for a globally routable unicast address; False for anything a webhook may not hit."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return address_is_public(str(mapped))
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified or not ip.is_global)


def host_is_allowed(host: str) -> bool:
    """The operator lists this host in WEBHOOK_ALLOWED_HOSTS (case-insensitive, exact)."""
    allowed = {h.strip().strip("[]").lower()
               for h in getattr(settings, "WEBHOOK_ALLOWED_HOSTS", []) if h.strip()}
    return host.strip("[]").lower() in allowed


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order (raises socket.gaierror)."""
    literal = _literal(host)
    if literal:
        return [literal]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = info[4][0]
        if address not in seen:
            seen.append(address)
    return seen


def checked_addresses(host: str, port: int) -> list[str]:
    """Resolve `host` and refuse it if any address is not public (unless the host is allowed)."""
    addresses = resolve(host, port)
    if not host_is_allowed(host):
        for address in addresses:
            if not address_is_public(address):
                raise AddressRefused(host, address)
    return addresses


def check_at_registration(url: str) -> None:
    """Refuse a URL whose host is a non-public IP literal or a name resolving to one now.

    A name that does not resolve at all is accepted (DNS may not know it yet, and the check runs
    again at each delivery)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host_is_allowed(host):
        return
    try:
        checked_addresses(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError):
        return


@dataclass
class PinnedResponse:
    status: int
    location: str


def pinned_post(url: str, *, body: bytes, headers: dict[str, str],
                timeout: float) -> PinnedResponse:
    """POST `body` to `url`, connecting only to an address that passed the check.

    The host is resolved once; every address is checked; the connection goes to the checked
    addresses in the resolver's order, the next one only when connecting fails (TLS still
    verifies the certificate against the host name, sent as SNI). Redirects are not followed: a
    3xx is returned to the caller as the receiver's answer."""
    import urllib3

    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    addresses = checked_addresses(host, port)
    default_port = (https and port == 443) or (not https and port == 80)
    host_header = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    for index, address in enumerate(addresses):
        try:
            return _post_to(address, port, https=https, host=host, path=path, body=body,
                            headers={**headers, "Host": host_header}, timeout=timeout)
        except urllib3.exceptions.NewConnectionError:
            if index == len(addresses) - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover - resolve() never returns []


def _post_to(address: str, port: int, *, https: bool, host: str, path: str, body: bytes,
             headers: dict[str, str], timeout: float) -> PinnedResponse:
    import certifi
    import urllib3

    timeouts = urllib3.Timeout(connect=timeout, read=timeout)
    if https:
        pool = urllib3.HTTPSConnectionPool(
            address, port, timeout=timeouts, retries=False, cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(), server_hostname=host, assert_hostname=host)
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeouts, retries=False)
    try:
        response = pool.urlopen("POST", path, body=body, headers=headers, redirect=False,
                                retries=False, preload_content=True)
        return PinnedResponse(status=response.status,
                              location=response.headers.get("Location", ""))
    finally:
        pool.close()
