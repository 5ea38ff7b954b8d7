"""Topics at start-up: check the input, verdicts and dead-letter topics, create the missing ones.

The brokers may still be starting: the admin client retries for a while. Wrong credentials or an
untrusted certificate are told apart from a broker that is down (`_credentials_refused`) and
stop the worker at once with a one-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

from worker.config import KafkaSettings
from worker.kafka_private import bootstrap_hosts, open_connection
from worker.kafka_security import aiokafka_auth

log = logging.getLogger(__name__)


class KafkaUnavailable(Exception):
    """The brokers did not answer, or the topics the worker needs are missing."""


async def ensure_topics(kafka: KafkaSettings, connect_timeout_s: float = 60.0) -> list[str]:
    """Check the input, verdicts and dead-letter topics; create the missing ones if allowed."""
    admin = await _connected_admin(kafka, connect_timeout_s)
    try:
        existing = set(await admin.list_topics())
        wanted = [kafka.input_topic, kafka.verdicts_topic, kafka.dlq_topic]
        missing = [name for name in wanted if name not in existing]
        if missing and not kafka.create_topics:
            hint = "create them, or set GUARDSTREAM_KAFKA__CREATE_TOPICS=true"
            raise KafkaUnavailable(f"missing topic(s) {', '.join(missing)}: {hint}")
        for name in missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was faster
                await admin.create_topics([NewTopic(name, kafka.partitions, kafka.replication_factor)])
        return missing
    finally:
        await admin.close()


async def _connected_admin(kafka: KafkaSettings, timeout_s: float) -> AIOKafkaAdminClient:
    servers = kafka.bootstrap_servers
    deadline = time.monotonic() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=servers, client_id="guardstream-admin", **aiokafka_auth(kafka)
        )
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            await admin.close()
            refused = await _credentials_refused(kafka)
            if refused is not None:  # waiting cannot cure wrong credentials or an untrusted certificate
                raise KafkaUnavailable(_refusal_message(kafka, refused)) from refused
            if time.monotonic() > deadline:
                raise KafkaUnavailable(
                    f"no Kafka broker answered at {servers} within {timeout_s:.0f} s"
                ) from exc
            log.warning("Kafka at %s does not answer yet; retrying", servers)
            await asyncio.sleep(2.0)
        else:
            return admin


#: Errors of a TLS handshake or SASL login: the brokers answer, but not to these credentials.
_CREDENTIAL_ERRORS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
    ssl.SSLError,
)
CREDENTIAL_CHECK_TIMEOUT_MS = 10_000


async def _credentials_refused(kafka: KafkaSettings) -> BaseException | None:
    """The TLS or SASL error a bootstrap server answers the worker's credentials with, if any.

    aiokafka's admin client reports any bootstrap failure as a bare KafkaConnectionError; one
    direct connection per server tells a refused login or certificate from a broker that is down.
    """
    auth = aiokafka_auth(kafka)
    for host, port in bootstrap_hosts(kafka.bootstrap_servers):
        try:
            conn = await open_connection(host, port, "guardstream-admin", CREDENTIAL_CHECK_TIMEOUT_MS, **auth)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            continue  # cut off mid-handshake (a broker going down), not refused
        except _CREDENTIAL_ERRORS as exc:
            return exc
        except (OSError, KafkaError, TimeoutError):
            continue  # down or unreachable: the caller retries
        conn.close()
    return None


def _refusal_message(kafka: KafkaSettings, exc: BaseException) -> str:
    """A one-line reason naming what to check (never the password)."""
    servers, protocol = kafka.bootstrap_servers, kafka.security_protocol
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake with Kafka at {servers} ({protocol}) failed: {exc} "
            "(check ssl_cafile and the brokers' certificate)"
        )
    return (
        f"Kafka at {servers} refused the credentials of user {kafka.sasl_username!r} "
        f"({protocol}, {kafka.sasl_mechanism}): {exc}"
    )
