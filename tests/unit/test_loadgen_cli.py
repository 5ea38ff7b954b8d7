"""`guardstream loadtest`: dispatched by the main command, fresh topics for its own workers."""

from __future__ import annotations

import pytest

from loadtest.loadgen import build_parser, run_settings
from worker.cli import main


def test_help_is_reachable_from_the_main_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["loadtest", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for words in ("open-loop", "generator lag", "--repeat-share", "--no-worker", "lost", "duplicated"):
        assert words in out


def test_own_workers_get_fresh_topics_and_no_worker_keeps_the_configured_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GUARDSTREAM_KAFKA__INPUT_TOPIC", raising=False)
    own = run_settings(build_parser().parse_args(["--workers", "2"]), "abc")
    assert own.kafka.input_topic == "lt-abc.prompts" and own.kafka.group_id == "lt-abc"
    assert own.kafka.verdicts_topic == "lt-abc.verdicts" and own.kafka.dlq_topic == "lt-abc.dlq"
    existing = run_settings(build_parser().parse_args(["--no-worker", "--verdicts-topic", "v"]), "abc")
    assert existing.kafka.input_topic == "prompts" and existing.kafka.verdicts_topic == "v"
