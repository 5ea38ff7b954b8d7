"""Kafka TLS and SASL settings become the right client arguments; secrets stay out of reprs."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from pydantic import ValidationError

from worker.config import KafkaSettings, load_settings
from worker.kafka_security import aiokafka_auth, ssl_context


def kafka(**fields: Any) -> KafkaSettings:
    return KafkaSettings(**fields)


def test_plaintext_by_default() -> None:
    settings = kafka()
    assert aiokafka_auth(settings) == {"security_protocol": "PLAINTEXT"}


def test_ssl_gives_a_verifying_context() -> None:
    settings = kafka(security_protocol="SSL")
    context = ssl_context(settings)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    auth = aiokafka_auth(settings)
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(("protocol", "tls"), [("SASL_PLAINTEXT", False), ("SASL_SSL", True)])
def test_sasl_carries_mechanism_user_and_password(protocol: str, tls: bool) -> None:
    settings = kafka(
        security_protocol=protocol,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="guard",
        sasl_password="s3cret",  # noqa: S106 (a test value)
    )
    auth = aiokafka_auth(settings)
    assert auth["security_protocol"] == protocol
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("guard", "s3cret")
    assert isinstance(auth.get("ssl_context"), ssl.SSLContext) is tls


def test_sasl_needs_credentials_and_key_needs_certificate() -> None:
    with pytest.raises(ValidationError, match="needs sasl_username and sasl_password"):
        kafka(security_protocol="SASL_SSL", sasl_username="guard")
    with pytest.raises(ValidationError, match="ssl_keyfile is given without ssl_certfile"):
        kafka(security_protocol="SSL", ssl_keyfile="/etc/guardstream/client.key")


def test_missing_ca_file_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(FileNotFoundError):
        ssl_context(kafka(security_protocol="SSL", ssl_cafile=tmp_path / "nowhere.pem"))


def test_password_is_not_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDSTREAM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GUARDSTREAM_KAFKA__SASL_USERNAME", "guard")
    monkeypatch.setenv("GUARDSTREAM_KAFKA__SASL_PASSWORD", "s3cret-value")
    settings = load_settings({})
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings.model_dump())
