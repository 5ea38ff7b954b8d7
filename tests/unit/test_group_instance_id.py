"""GUARDSTREAM_KAFKA__GROUP_INSTANCE_ID: static group membership, off by default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from worker.config import Settings
from worker.consumer import consumer_options


def test_off_by_default() -> None:
    settings = Settings()
    assert settings.kafka.group_instance_id is None
    assert consumer_options(settings.kafka, "w:1")["group_instance_id"] is None


def test_set_from_the_environment_and_handed_to_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDSTREAM_KAFKA__GROUP_INSTANCE_ID", "guardstream-3")
    settings = Settings()
    assert settings.kafka.group_instance_id == "guardstream-3"
    assert consumer_options(settings.kafka, "w:1")["group_instance_id"] == "guardstream-3"


@pytest.mark.parametrize("value", ["", "has space", "slash/name", "x" * 250])
def test_names_the_broker_would_reject_are_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GUARDSTREAM_KAFKA__GROUP_INSTANCE_ID", value)
    with pytest.raises(ValidationError):
        Settings()
