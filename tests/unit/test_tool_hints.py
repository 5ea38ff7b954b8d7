"""A tool whose extra is not installed says which extra to install."""

from __future__ import annotations

from typing import Any

import pytest

from worker import cli


@pytest.mark.parametrize(
    ("tool", "extra"),
    [("train", "train"), ("export", "train"), ("synth", "synth"), ("loadtest", "loadtest")],
)
def test_a_missing_dependency_names_the_tools_extra(
    tool: str, extra: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(name: str) -> Any:
        raise ModuleNotFoundError(f"No module named 'somelib' (importing {name})", name="somelib")

    monkeypatch.setattr("importlib.import_module", missing)
    assert cli.main([tool, "--help"]) == 2
    err = capsys.readouterr().err
    assert f"guardstream[{extra}]" in err and "somelib" in err
    others = {"train", "synth", "loadtest"} - {extra}
    assert not any(f"guardstream[{other}]" in err for other in others)
