"""TLS and SASL for the worker's Kafka clients, from `KafkaSettings`.

One function builds faust's broker credentials; faust turns them into aiokafka's arguments, and
the admin client used at start-up gets the same arguments, so every connection the worker opens
is secured alike. Passwords stay `SecretStr` until they are handed to the client.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import faust

from worker.config import KafkaSettings
from worker.kafka_private import aiokafka_auth_of


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """A verifying TLS context (CA bundle, optional client certificate) for SSL and SASL_SSL."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile is not None:
        keyfile = str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
        context.load_cert_chain(str(kafka.ssl_certfile), keyfile)
    return context


def broker_credentials(kafka: KafkaSettings) -> Any:
    """faust's credentials for the settings, or None for PLAINTEXT."""
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL_"):
        assert kafka.sasl_password is not None  # noqa: S101 (KafkaSettings validates it)
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def aiokafka_auth(kafka: KafkaSettings) -> Mapping[str, Any]:
    """Keyword arguments of an aiokafka client: security_protocol, ssl_context, sasl_*."""
    return aiokafka_auth_of(broker_credentials(kafka))
