import pytest
from pydantic import ValidationError

from worker.cli import build_parser, main, settings_from_args
from worker.config import Settings


def test_defaults_match_the_contract() -> None:
    settings = Settings()
    assert (settings.kafka.input_topic, settings.kafka.verdicts_topic, settings.kafka.dlq_topic) == (
        "prompts",
        "verdicts",
        "prompts.dlq",
    )
    assert (settings.model.path / "config.json").exists()


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDSTREAM_KAFKA__BOOTSTRAP_SERVERS", "env-broker:9092")
    monkeypatch.setenv("GUARDSTREAM_BATCHING__MAX_BATCH_TOKENS", "4096")
    monkeypatch.setenv("GUARDSTREAM_REDIS__URL", "redis://:hunter2@cache:6379/1")
    args = build_parser().parse_args(
        ["worker", "--max-batch-tokens", "1024", "--no-cache", "--log-level", "DEBUG"]
    )
    settings = settings_from_args(args)
    assert settings.kafka.bootstrap_servers == "env-broker:9092"
    assert settings.batching.max_batch_tokens == 1024
    assert settings.redis.enabled is False
    assert settings.log_level == "DEBUG"
    assert settings.redis.url.get_secret_value() == "redis://:hunter2@cache:6379/1"
    assert "hunter2" not in repr(settings)


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDSTREAM_BATCHING__MAX_BATCH_REQUESTS", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_cli_reports_invalid_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GUARDSTREAM_KAFKA__PARTITIONS", "-3")
    assert main(["worker"]) == 2
    assert "invalid settings" in capsys.readouterr().err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "worker" in out and "demo" in out and "score" in out
