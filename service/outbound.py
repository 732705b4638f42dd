"""Safe outbound requests, shared by webhooks and metric sources.

- No redirect is followed (a 3xx is an answer like any other, and not a success).
- One deadline for the whole exchange (connect, send, receive), and a cap on the
  response's size: a slow or endless answer fails, it never holds a worker.
- Outside development only `https`; and unless private targets are allowed
  (OKR_WEBHOOK_ALLOW_PRIVATE: on in development, off in production), every address the
  host resolves to must be a public one: not loopback, private, link-local (169.254/16,
  where cloud metadata lives), carrier-grade NAT, multicast, reserved or unspecified,
  nor an IPv4 address dressed as IPv6. The check runs when a URL is saved and again
  when each request is sent, and the request goes to the very address that was checked
  (the URL's host kept for TLS and the Host header), so a name that resolves to a
  public address at the check and a private one at connect time (DNS rebinding) gains
  nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from service.settings import Settings

# httpx logs every request's URL at INFO; a URL may carry a token in its query, and
# secrets are never logged: its own logs stay at WARNING and above.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Addresses refused even where private targets are allowed: cloud metadata services.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


class UnsafeTarget(ValueError):
    """A URL that may not be called (scheme, host, or where it resolves to)."""


class OutboundFailed(Exception):
    """The request could not be made or answered within the limits."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    duration_ms: float
    headers: Mapping[str, str] = field(default_factory=dict)


def _forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> bool:
    if ip in METADATA:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_private:
        return False
    return not ip.is_global or ip.is_multicast


@dataclass
class Outbound:
    allow_private: bool
    allow_http: bool
    timeout: float = 10.0
    max_bytes: int = 1_000_000
    _client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Outbound:
        return cls(
            allow_private=settings.private_targets_allowed,
            allow_http=settings.env == "development",
            timeout=settings.outbound_timeout_seconds,
            max_bytes=settings.outbound_max_bytes,
        )

    def check_url(self, url: str) -> tuple[str, str, int]:
        """The scheme, host and port of a URL that may be called, as far as its text
        says (the addresses are checked by `resolve`); UnsafeTarget otherwise."""
        if not isinstance(url, str) or len(url) > 2000 or not url.isascii():
            raise UnsafeTarget("the URL must be ASCII and at most 2,000 characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise UnsafeTarget("not a URL") from None
        scheme = parts.scheme.lower()
        allowed = ("https", "http") if self.allow_http else ("https",)
        if scheme not in allowed:
            raise UnsafeTarget(
                "the URL must be https" if not self.allow_http else "the URL must be http(s)"
            )
        if not parts.hostname:
            raise UnsafeTarget("the URL has no host")
        if parts.username or parts.password:
            raise UnsafeTarget("the URL may not carry a user or password (use headers)")
        return scheme, parts.hostname, port or (443 if scheme == "https" else 80)

    async def resolve(self, url: str) -> list[str]:
        """The addresses the URL's host resolves to, every one of them allowed."""
        _scheme, host, port = self.check_url(url)
        try:
            literal = ipaddress.ip_address(host)
            addresses = [literal]
        except ValueError:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.timeout
                )
            except (OSError, TimeoutError) as exc:
                raise UnsafeTarget(f"the host {host!r} does not resolve") from exc
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise UnsafeTarget(f"the host {host!r} does not resolve")
        for ip in addresses:
            if _forbidden(ip, self.allow_private):
                raise UnsafeTarget(
                    f"the host {host!r} resolves to {ip}, a loopback, private, link-local "
                    "or metadata address"
                )
        return [str(ip) for ip in addresses]

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                trust_env=False,  # no proxy from the environment decides where we connect
            )
        return self._client

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request to a checked address (UnsafeTarget, OutboundFailed)."""
        scheme, host, _port = self.check_url(url)
        addresses = await self.resolve(url)
        target = httpx.URL(url)
        pinned = target.copy_with(host=addresses[0])
        sent_headers = {"Host": target.netloc.decode("ascii"), **(headers or {})}
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                request = self.client().build_request(
                    method,
                    pinned,
                    headers=sent_headers,
                    content=content,
                    params=params,
                    extensions=extensions,
                )
                response = await self.client().send(request, stream=True)
                try:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise OutboundFailed(
                                f"the response is larger than {self.max_bytes} bytes"
                            )
                finally:
                    await response.aclose()
        except TimeoutError:
            raise OutboundFailed(f"no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise OutboundFailed(f"{type(exc).__name__}: {exc}") from None
        duration = (time.perf_counter() - started) * 1000
        return Answer(response.status_code, bytes(body), duration, dict(response.headers))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
