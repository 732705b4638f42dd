"""Safe outbound requests (service/outbound.py) and secrets at rest (service/secrets.py),
against a real HTTP receiver."""

from __future__ import annotations

import asyncio
import socket

import pytest

from service.outbound import Outbound, OutboundFailed, UnsafeTarget
from service.secrets import Box, SecretUnreadable
from service.settings import Settings
from tests.receiver import Receiver, Reply

PUBLIC = Outbound(allow_private=False, allow_http=False, timeout=2.0, max_bytes=10_000)
OPEN = Outbound(allow_private=True, allow_http=True, timeout=1.0, max_bytes=10_000)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://example.com/hook", "https"),
        ("ftp://example.com/x", "https"),
        ("https://user:pw@example.com/x", "user or password"),
        ("https:///nohost", "no host"),
        ("https://127.0.0.1/x", "loopback, private"),
        ("https://10.1.2.3/x", "loopback, private"),
        ("https://192.168.1.1/x", "loopback, private"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://100.64.0.1/x", "loopback, private"),  # carrier-grade NAT
        ("https://[::1]/x", "loopback, private"),
        ("https://[::ffff:127.0.0.1]/x", "loopback, private"),  # IPv4 dressed as IPv6
        ("https://[fd00:ec2::254]/x", "metadata"),
        ("https://localhost/x", "loopback, private"),  # a name that resolves to loopback
    ],
)
async def test_unsafe_targets_are_refused_outside_development(url: str, reason: str):
    with pytest.raises(UnsafeTarget, match=reason):
        await PUBLIC.resolve(url)


async def test_a_public_literal_address_passes_the_check():
    assert await PUBLIC.resolve("https://93.184.215.14/hook") == ["93.184.215.14"]


async def test_metadata_stays_refused_where_private_targets_are_allowed():
    with pytest.raises(UnsafeTarget, match="metadata"):
        await OPEN.resolve("http://169.254.169.254/latest/meta-data")
    assert await OPEN.resolve("http://10.0.0.1/x") == ["10.0.0.1"]


async def test_dns_rebinding_is_checked_again_at_send_time(monkeypatch: pytest.MonkeyPatch):
    """The name resolves to a public address when the URL is saved, to loopback when the
    request is sent: the send is refused and nothing is connected to."""
    answers = iter(["93.184.215.14", "127.0.0.1"])
    loop = asyncio.get_running_loop()

    async def rebinding(host, port, **_kw):
        ip = next(answers)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(loop, "getaddrinfo", rebinding)
    assert await PUBLIC.resolve("https://rebind.example/hook") == ["93.184.215.14"]
    with pytest.raises(UnsafeTarget, match=r"127\.0\.0\.1"):
        await PUBLIC.request("POST", "https://rebind.example/hook", content=b"{}")


async def test_the_request_goes_to_the_checked_address_with_the_host_kept():
    async with Receiver() as r:
        answer = await OPEN.request(
            "POST", f"http://localhost:{r.port}/in", headers={"x-a": "1"}, content=b"hi"
        )
    assert answer.status == 200 and answer.body == b"ok" and answer.duration_ms > 0
    [seen] = r.requests
    assert (seen.method, seen.path, seen.body) == ("POST", "/in", b"hi")
    assert seen.headers["host"] == f"localhost:{r.port}" and seen.headers["x-a"] == "1"


async def test_redirects_are_not_followed():
    async with Receiver(lambda _r: Reply(302, b"", {"Location": "http://127.0.0.1:9/x"})) as r:
        answer = await OPEN.request("GET", r.url + "/a")
    assert answer.status == 302 and len(r.requests) == 1


async def test_answers_past_the_size_cap_or_the_deadline_fail():
    async with Receiver(lambda _r: Reply(200, b"x" * 20_000)) as r:
        with pytest.raises(OutboundFailed, match="larger than 10000 bytes"):
            await OPEN.request("GET", r.url)
    async with Receiver(lambda _r: Reply(200, b"late", delay=3)) as r:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(OutboundFailed, match="no answer within 1 s"):
            await OPEN.request("GET", r.url)
        assert loop.time() - started < 2.5


def test_settings_allow_private_targets_in_development_only(tmp_path):
    dev = Settings(data_dir=tmp_path)
    assert dev.private_targets_allowed and Outbound.from_settings(dev).allow_http
    prod = Settings(
        env="production", database_url="postgresql://x/y", jwt_secret="s" * 40, data_dir=tmp_path
    )
    assert not prod.private_targets_allowed and not Outbound.from_settings(prod).allow_http
    assert Settings(data_dir=tmp_path, webhook_allow_private=False).private_targets_allowed is False
    # Production keeps no secret without OKR_SECRETS_KEY.
    with pytest.raises(RuntimeError, match="OKR_SECRETS_KEY"):
        Box.from_settings(prod)


def test_secrets_are_sealed_and_only_the_right_key_opens_them(tmp_path):
    box = Box.from_settings(Settings(data_dir=tmp_path))
    sealed = box.seal("whsec_topsecret")
    assert "topsecret" not in sealed and sealed != box.seal("whsec_topsecret")
    assert box.open(sealed) == "whsec_topsecret"
    # The development key is generated once and kept: a second process opens it too.
    assert Box.from_settings(Settings(data_dir=tmp_path)).open(sealed) == "whsec_topsecret"
    with pytest.raises(SecretUnreadable):
        Box.of_key("another key entirely, long enough").open(sealed)
    assert "topsecret" not in repr(box)
