"""The work directory that makes a synth run resumable, and atomic file writes.

Next to the output `OUT` lives `OUT.work/` with two append-only JSONL files:
`generated.jsonl` (one line per finished generation request, a prompt or a failure reason) and
`reflected.jsonl` (one line per finished reflection). Every line is flushed as soon as it is
written, and carries the request's deterministic key, so a rerun skips what is already there: a
crash or Ctrl-C loses at most the requests that were in flight. A line cut short by a crash is
ignored on reading (and the next append starts on a fresh line).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

GENERATED_FILE = "generated.jsonl"
REFLECTED_FILE = "reflected.jsonl"


def work_dir_for(output: Path) -> Path:
    """`OUT.work/` next to the output file `OUT`."""
    return output.with_name(output.name + ".work")


class JsonlLog:
    """An append-only JSONL file of records keyed by their `key` field."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self.unreadable_lines = 0
        self._load()
        self._stream: TextIO | None = None

    def _load(self) -> None:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as stream:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    self.unreadable_lines += 1
                    continue
                if isinstance(record, dict) and isinstance(record.get("key"), str):
                    self.records[record["key"]] = record
                else:
                    self.unreadable_lines += 1

    def __contains__(self, key: object) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of `key`, or None."""
        return self.records.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Write one record (it must have a `key`) as a line and flush it."""
        if self._stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            needs_newline = (
                self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
            )
            self._stream = self.path.open("a", encoding="utf-8")
            if needs_newline:
                self._stream.write("\n")
        self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._stream.flush()
        self.records[record["key"]] = record

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as stream:
        stream.seek(-1, os.SEEK_END)
        return stream.read(1) == b"\n"


class WorkDir:
    """The generated and reflected records of one output file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.generated = JsonlLog(directory / GENERATED_FILE)
        self.reflected = JsonlLog(directory / REFLECTED_FILE)

    def close(self) -> None:
        self.generated.close()
        self.reflected.close()


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def jsonl_text(records: Iterable[dict[str, Any]]) -> str:
    """Records as JSONL text, one object per line."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
