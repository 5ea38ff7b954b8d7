"""Labeled prompts from a user's own files: JSON lines, CSV or parquet.

Every file needs a text column (`text` unless told otherwise) and labels, in one of three shapes:

- one column per policy, named by the policy id (`unsafe_content`, `prompt_injection`, ...);
- a `policy` and a `label` column: each row labels the policy it names (the format of
  `guardstream synth` output and of `models/train/policy_examples.jsonl`); rows naming a policy
  outside `--policies` are skipped;
- one `label` column that speaks for a single policy, named in a sources file (below), or
  implied when only one policy is trained.

A label is positive (1, true, "1", "yes", "unsafe", "positive", ...), negative (0, false, "0",
"no", "safe", "benign", ...) or unknown (empty, null, -1): an unknown target is left out of that
policy's loss and metrics. A `split` column (train, validation, test, heldout) is used when
present; otherwise a hash of the text assigns 70/15/15 train/validation/test.

A sources file (YAML) says how each file maps to policies:

    policies: [unsafe_content, prompt_injection]   # the model's outputs, in order
    files:
      - path: harmful.csv               # relative to the sources file
        text: prompt                    # text column [text]
        label: is_harmful               # label column [label]
        policy: unsafe_content          # which policy the label column is about
        others: negative                # the other policies: negative or unknown [unknown]
        split: heldout                  # the whole file in one split [per row]
      - path: mixed.jsonl               # per-policy columns, nothing else to say
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.base.text import normalize_text
from models.train.data import (
    HANDWRITTEN_FILES,
    POLICIES,
    SPLITS,
    UNKNOWN,
    Example,
    Targets,
    deduplicate,
    hash_split,
    shared_examples,
)

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_POSITIVE = frozenset({"1", "true", "yes", "y", "unsafe", "positive", "harmful", "injection", "malicious"})
_NEGATIVE = frozenset({"0", "false", "no", "n", "safe", "negative", "benign", "harmless"})
_UNKNOWN = frozenset({"", "-1", "none", "null", "nan", "unknown"})


class DataFileError(ValueError):
    """A data file or sources file that cannot be read as labeled prompts."""


@dataclass(frozen=True)
class FileSource:
    """How one file's columns become texts and per-policy targets."""

    path: Path
    text_column: str = "text"
    label_column: str = "label"
    policy: str | None = None
    others_negative: bool = False
    split: str | None = None


@dataclass(frozen=True)
class Sources:
    """The policies to train, in output order, and the files to read."""

    policies: tuple[str, ...]
    files: tuple[FileSource, ...]


def parse_label(value: Any, where: str) -> int:
    """1, 0 or UNKNOWN for a label cell; `DataFileError` naming `where` for anything else."""
    if value is None or isinstance(value, bool):
        return UNKNOWN if value is None else int(value)
    if isinstance(value, int | float) and value in (0, 1, -1):
        return int(value)
    text = str(value).strip().lower()
    if text in _POSITIVE:
        return 1
    if text in _NEGATIVE:
        return 0
    if text in _UNKNOWN:
        return UNKNOWN
    raise DataFileError(f"{where}: label {value!r} is not 1/0, true/false, safe/unsafe or empty")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataFileError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        for number, row in enumerate(reader, start=2):
            yield number, dict(row)


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataFileError(f"{path}: not a readable parquet file ({exc})") from exc
    yield from enumerate(table.to_pylist(), start=1)


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, row) of a JSONL, CSV or parquet file."""
    if not path.is_file():
        raise DataFileError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _jsonl_rows(path)
    if suffix == ".csv":
        return _csv_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise DataFileError(f"{path}: unsupported file type {suffix!r} (use {', '.join(SUFFIXES)})")


def _row_targets(row: dict[str, Any], source: FileSource, policies: Sequence[str], where: str) -> Targets:
    named = row.get("policy")
    if isinstance(named, str) and source.label_column in row:
        label = parse_label(row[source.label_column], where)
        return tuple(label if policy == named else UNKNOWN for policy in policies)
    if source.policy is not None:
        if source.label_column not in row:
            raise DataFileError(f"{where}: no {source.label_column!r} column")
        label = parse_label(row[source.label_column], where)
        other = 0 if source.others_negative else UNKNOWN
        return tuple(label if policy == source.policy else other for policy in policies)
    present = [policy for policy in policies if policy in row]
    if not present:
        raise DataFileError(
            f"{where}: no column for any of the policies {', '.join(policies)}; name the policy of "
            "the label column in a sources file (--sources)"
        )
    return tuple(parse_label(row.get(policy), where) for policy in policies)


def _row_split(row: dict[str, Any], source: FileSource, text: str, where: str) -> str:
    split = source.split or row.get("split")
    if split in (None, ""):
        return hash_split(text)
    if split not in SPLITS:
        raise DataFileError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    return str(split)


def load_file(source: FileSource, policies: Sequence[str]) -> list[Example]:
    """The labeled, normalized prompts of one file; empty texts are skipped."""
    examples: list[Example] = []
    for number, row in read_rows(source.path):
        where = f"{source.path}:{number}"
        if source.text_column not in row:
            raise DataFileError(f"{where}: no {source.text_column!r} column (columns: {', '.join(row)})")
        raw = row[source.text_column]
        if raw is None:
            continue
        text = normalize_text(str(raw))
        targets = _row_targets(row, source, policies, where)
        if text and any(target != UNKNOWN for target in targets):
            examples.append(Example(text, targets, _row_split(row, source, text, where), source.path.stem))
    if not examples:
        raise DataFileError(f"{source.path}: no labeled prompts")
    return examples


def _source_from_yaml(entry: Any, base: Path, policies: Sequence[str], where: str) -> FileSource:
    if not isinstance(entry, dict) or "path" not in entry:
        raise DataFileError(f"{where}: every entry of `files` needs a `path`")
    policy = entry.get("policy")
    if policy is not None and policy not in policies:
        raise DataFileError(f"{where}: policy {policy!r} is not in `policies` ({', '.join(policies)})")
    others = entry.get("others", "unknown")
    if others not in ("negative", "unknown"):
        raise DataFileError(f"{where}: `others` must be negative or unknown, got {others!r}")
    split = entry.get("split")
    if split is not None and split not in SPLITS:
        raise DataFileError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    return FileSource(
        path=(base / str(entry["path"])).resolve(),
        text_column=str(entry.get("text", "text")),
        label_column=str(entry.get("label", "label")),
        policy=policy,
        others_negative=others == "negative",
        split=split,
    )


def load_sources(path: Path) -> Sources:
    """Read and check a sources file (see the module docstring)."""
    import yaml

    if not path.is_file():
        raise DataFileError(f"sources file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataFileError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict) or not raw.get("policies") or not raw.get("files"):
        raise DataFileError(f"{path}: needs a non-empty `policies` list and a non-empty `files` list")
    policies = tuple(str(p) for p in raw["policies"])
    if len(set(policies)) != len(policies):
        raise DataFileError(f"{path}: policies repeat: {', '.join(policies)}")
    files = tuple(
        _source_from_yaml(entry, path.parent, policies, f"{path}: files[{index}]")
        for index, entry in enumerate(raw["files"])
    )
    return Sources(policies, files)


def plain_sources(paths: Sequence[Path], policies: Sequence[str]) -> Sources:
    """Files given on the command line: per-policy columns, or a `label` column when one policy."""
    policy = policies[0] if len(policies) == 1 else None
    return Sources(tuple(policies), tuple(FileSource(path=p, policy=policy) for p in paths))


def load_sources_examples(sources: Sources) -> list[Example]:
    """Every file's examples, in file order (deduplicate afterwards)."""
    return [example for source in sources.files for example in load_file(source, sources.policies)]


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--data-dir, --data, --sources and --policies (shared by train and eval)."""
    data = parser.add_argument_group("data (one of --data-dir, --data, --sources)")
    data.add_argument("--data-dir", type=Path, help="the shared datasets directory (project labeling rules)")
    data.add_argument("--data", type=Path, nargs="+", help="your JSONL / CSV / parquet files")
    data.add_argument("--sources", type=Path, help="YAML mapping your files to policies")
    data.add_argument(
        "--policies",
        default=",".join(POLICIES),
        help="policy ids of --data files, comma-separated, in output order [%(default)s]",
    )
    return data


def load_examples(args: argparse.Namespace) -> tuple[tuple[str, ...], list[Example]]:
    """(policies, deduplicated examples) from the data flags; `DataFileError` when they are wrong."""
    chosen = [flag for flag in ("data_dir", "data", "sources") if getattr(args, flag)]
    if len(chosen) != 1:
        raise DataFileError("give exactly one of --data-dir, --data, --sources")
    if args.data_dir is not None:
        if not args.data_dir.is_dir():
            raise DataFileError(f"data directory {args.data_dir} not found (the shared datasets, see README)")
        return POLICIES, shared_examples(args.data_dir, HANDWRITTEN_FILES)
    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    sources = load_sources(args.sources) if args.sources else plain_sources(args.data, policies)
    return sources.policies, deduplicate(load_sources_examples(sources))
