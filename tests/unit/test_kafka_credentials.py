"""Start-up tells refused Kafka credentials from a broker that is down, without a broker.

A wrong password or an untrusted certificate cannot be cured by waiting, so `ensure_topics`
fails at once with a clear reason instead of retrying for its whole connect timeout.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.errors import SaslAuthenticationFailed

from worker import kafka_private
from worker.admin import KafkaUnavailable, ensure_topics
from worker.config import KafkaSettings

PASSWORD = "s3cret-value"  # noqa: S105 (a test value)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def not_tls_server() -> AsyncIterator[int]:
    """A TCP server on loopback that answers a TLS hello with plain text: its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def test_a_tls_handshake_failure_is_reported_at_once(not_tls_server: int) -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{not_tls_server}", security_protocol="SSL")
    started = time.monotonic()
    with pytest.raises(
        KafkaUnavailable, match=r"TLS handshake with Kafka at 127\.0\.0\.1:\d+ \(SSL\) failed"
    ):
        await ensure_topics(settings, connect_timeout_s=60)
    assert time.monotonic() - started < 15


async def test_a_refused_login_is_reported_at_once_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refusing_create_conn(*args: Any, **kwargs: Any) -> Any:
        assert kwargs["sasl_plain_password"] == PASSWORD
        raise SaslAuthenticationFailed("Authentication failed: Invalid username or password")

    monkeypatch.setattr(kafka_private, "create_conn", refusing_create_conn)
    settings = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{closed_port()}",
        security_protocol="SASL_PLAINTEXT",
        sasl_username="guard",
        sasl_password=PASSWORD,  # pydantic turns it into a SecretStr
    )
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="refused the credentials of user 'guard'") as caught:
        await ensure_topics(settings, connect_timeout_s=60)
    assert time.monotonic() - started < 15
    assert "Invalid username or password" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert isinstance(caught.value.__cause__, SaslAuthenticationFailed)


async def test_a_broker_that_is_down_is_still_waited_for() -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    with pytest.raises(KafkaUnavailable, match=r"no Kafka broker answered at .* within 0 s"):
        await ensure_topics(settings, connect_timeout_s=0)
