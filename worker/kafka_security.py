"""TLS and SASL for the worker's Kafka clients, from `KafkaSettings`.

One function builds the security arguments of an aiokafka client; the consumer, the producer and
the admin client used at start-up all get them, so every connection the worker opens is secured
alike. Passwords stay `SecretStr` until they are handed to the client.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from worker.config import KafkaSettings


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """A verifying TLS context (CA bundle, optional client certificate) for SSL and SASL_SSL."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile is not None:
        keyfile = str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
        context.load_cert_chain(str(kafka.ssl_certfile), keyfile)
    return context


def aiokafka_auth(kafka: KafkaSettings) -> Mapping[str, Any]:
    """Keyword arguments of an aiokafka client: security_protocol, ssl_context, sasl_*."""
    auth: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    context = ssl_context(kafka)
    if context is not None:
        auth["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # noqa: S101 (KafkaSettings validates it)
        auth["sasl_mechanism"] = kafka.sasl_mechanism
        auth["sasl_plain_username"] = kafka.sasl_username
        auth["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return auth
