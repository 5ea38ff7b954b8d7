"""Policies as data: the definitions, an ordered set of them and the YAML loader.

A policy file holds one policy (a mapping with `id`) or several (`policies: [...]`). The loader
checks every field and raises `PolicyError` with a message that names the file, the policy (its
id, or its position when the id is missing) and the field, so a bad edit is fixed without
reading this code. See `models/policies/starter/` for the format.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_POLICY_DIR = Path(__file__).parent / "starter"

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_DESCRIPTION_CHARS = 2000
REQUIRED_FIELDS = ("id", "version", "name", "description", "threshold")
KNOWN_FIELDS = (*REQUIRED_FIELDS, "allowed", "disallowed", "examples", "enabled", "kind")
#: `restrict`: the description says what is forbidden. `scope`: it says what is allowed, and
#: everything else violates the policy ("only questions about our plans and bills").
POLICY_KINDS = ("restrict", "scope")
EXAMPLE_KINDS = ("safe", "unsafe")
_SUFFIXES = (".yaml", ".yml")
_MERGE_TAG = "tag:yaml.org,2002:merge"


class PolicyError(ValueError):
    """A policy file that cannot be read or holds an invalid policy; the message says where."""


def _digest(payload: object) -> str:
    """First 16 hex characters of the sha256 of `payload` as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PolicyDefinition:
    """One policy: what it forbids, what it allows, examples and the score threshold."""

    id: str
    version: str
    name: str
    description: str
    allowed: tuple[str, ...]
    disallowed: tuple[str, ...]
    safe_examples: tuple[str, ...]
    unsafe_examples: tuple[str, ...]
    threshold: float
    enabled: bool = True
    source: str = ""
    kind: str = "restrict"

    @property
    def is_scope(self) -> bool:
        """A scope policy is violated by what falls outside its description."""
        return self.kind == "scope"

    @property
    def fingerprint(self) -> str:
        """Hash of the fields that change what the policy means (not threshold, enabled, source).

        A cached score is only valid for the text it was computed against; keying the cache by
        this fingerprint makes an edited policy miss the cache instead of reusing stale scores.
        """
        return _digest(
            {
                "id": self.id,
                "version": self.version,
                "name": self.name,
                "description": self.description,
                **({"kind": self.kind} if self.is_scope else {}),
                "allowed": list(self.allowed),
                "disallowed": list(self.disallowed),
                "safe_examples": list(self.safe_examples),
                "unsafe_examples": list(self.unsafe_examples),
            }
        )


@dataclass(frozen=True, slots=True)
class PolicySet:
    """An ordered, immutable collection of policies with unique ids."""

    policies: tuple[PolicyDefinition, ...]

    def __post_init__(self) -> None:
        seen: dict[str, PolicyDefinition] = {}
        for policy in self.policies:
            first = seen.get(policy.id)
            if first is not None:
                raise PolicyError(
                    f"{policy.source or '<memory>'}: policy {policy.id!r}: id {policy.id!r}"
                    f" is already defined in {first.source or '<memory>'}"
                )
            seen[policy.id] = policy

    @property
    def ids(self) -> tuple[str, ...]:
        """The policy ids, in order."""
        return tuple(policy.id for policy in self.policies)

    def get(self, policy_id: str) -> PolicyDefinition | None:
        """The policy with this id, or None."""
        return next((policy for policy in self.policies if policy.id == policy_id), None)

    def __contains__(self, policy_id: object) -> bool:
        return any(policy.id == policy_id for policy in self.policies)

    def __iter__(self) -> Iterator[PolicyDefinition]:
        return iter(self.policies)

    def __len__(self) -> int:
        return len(self.policies)

    def enabled(self) -> PolicySet:
        """The enabled policies, in the same order."""
        return PolicySet(tuple(policy for policy in self.policies if policy.enabled))

    @property
    def fingerprint(self) -> str:
        """Hash of the ids and policy fingerprints, in order."""
        return _digest([[policy.id, policy.fingerprint] for policy in self.policies])


# --------------------------------------------------------------------------------------------
# Loading


def load_policies(path: str | Path) -> PolicySet:
    """Load and validate the policies of one YAML file or of a directory of them.

    A directory contributes its `*.yaml` and `*.yml` files, sorted by name, not recursively.
    Raises `PolicyError` on the first problem found: an empty directory, an empty file or an
    empty `policies` list counts as one.
    """
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in _SUFFIXES and p.is_file())
        if not files:
            raise PolicyError(f"{root}: no policy files (*.yaml, *.yml) in directory")
    else:
        files = [root]
    # every file yields at least one policy or raises, so the set is never empty
    return PolicySet(tuple(policy for file in files for policy in _load_file(file)))


def _load_file(path: Path) -> list[PolicyDefinition]:
    """The policies of one file, in file order."""
    document = _parse_yaml(path)
    if not isinstance(document, dict):
        raise PolicyError(
            f"{path}: top level must be a mapping (one policy, or 'policies: [...]'),"
            f" got {_type_name(document)}"
        )
    if "policies" not in document:
        return [_build_policy(document, path, 1)]
    extra = sorted(str(key) for key in document if key != "policies")
    if extra:
        raise PolicyError(
            f"{path}: a file with a 'policies' list must hold nothing else, found {', '.join(extra)}"
        )
    entries = document["policies"]
    if not isinstance(entries, list):
        raise PolicyError(f"{path}: 'policies' must be a list, got {_type_name(entries)}")
    if not entries:
        raise PolicyError(f"{path}: 'policies' list is empty")
    return [_build_policy(entry, path, index) for index, entry in enumerate(entries, start=1)]


def _parse_yaml(path: Path) -> Any:
    """The parsed YAML of `path`; read and syntax errors become `PolicyError`."""
    if not path.exists():
        raise PolicyError(f"{path}: no such file or directory")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not valid UTF-8 at byte {exc.start}") from exc
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: invalid YAML{_yaml_location(exc)}: {_yaml_problem(exc)}") from exc
    if document is None:
        raise PolicyError(f"{path}: file is empty")
    return document


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that rejects a key given twice in one mapping.

    Plain YAML keeps the last value silently, so a second `threshold:` pasted at the end of a
    file would win without a word. Keys brought in by a merge (`<<: *base`) may be overridden.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_location(exc: yaml.YAMLError) -> str:
    """' at line L, column C' from the error's mark (1-based), or '' without one."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return ""
    return f" at line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The short description of a YAML error, without PyYAML's multi-line snippet."""
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem is None:
        return str(exc).splitlines()[0]
    return f"{problem} ({context})" if context else str(problem)


class _Fields:
    """Typed access to the fields of one policy mapping, with errors that say where."""

    def __init__(self, raw: Mapping[Any, Any], path: Path, index: int) -> None:
        self.raw = raw
        self.path = path
        raw_id = raw.get("id")
        self.label = f"policy {raw_id!r}" if isinstance(raw_id, str) and raw_id else f"policy #{index}"

    def error(self, message: str) -> PolicyError:
        """A `PolicyError` for this policy, prefixed with file and policy label."""
        return PolicyError(f"{self.path}: {self.label}: {message}")

    def check_keys(self) -> None:
        """Reject unknown fields, suggesting the closest known one."""
        for key in self.raw:
            if not isinstance(key, str):
                raise self.error(f"field names must be strings, got {key!r}")
            if key not in KNOWN_FIELDS:
                raise self.error(_unknown_field(key, KNOWN_FIELDS))
        for field in REQUIRED_FIELDS:
            if field not in self.raw:
                raise self.error(f"missing required field {field!r}")

    def text(self, field: str, max_chars: int | None = None) -> str:
        """A required, non-empty string field, stripped."""
        value = self.raw[field]
        if not isinstance(value, str):
            raise self.error(f"{field} must be a string, got {_type_name(value)}")
        value = value.strip()
        if not value:
            raise self.error(f"{field} must not be empty")
        if max_chars is not None and len(value) > max_chars:
            raise self.error(f"{field} must be at most {max_chars} characters, got {len(value)}")
        return value

    def policy_id(self) -> str:
        """The id, checked against `ID_PATTERN`."""
        value = self.raw["id"]
        if not isinstance(value, str) or not ID_PATTERN.match(value):
            raise self.error(
                "id must be 1-64 characters: lowercase letters, digits, '_', '.', '-',"
                f" starting with a letter or digit, got {value!r}"
            )
        return value

    def version(self) -> str:
        """The version: a string or an integer, kept as a non-empty string."""
        value = self.raw["version"]
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise self.error(
                f"version must be a string or an integer, got {_type_name(value)} {value!r}"
                ' (quote it, e.g. version: "1.0")'
            )
        return self.text("version")

    def threshold(self) -> float:
        """The threshold: a finite number strictly between 0 and 1 (bool is rejected)."""
        value = self.raw["threshold"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(f"threshold must be a number, got {_type_name(value)} {value!r}")
        if not math.isfinite(value) or not 0 < value < 1:
            raise self.error(f"threshold must be a number between 0 and 1 (exclusive), got {value}")
        return float(value)

    def kind(self) -> str:
        """The optional kind, one of `POLICY_KINDS` (default `restrict`)."""
        value = self.raw.get("kind", POLICY_KINDS[0])
        if value not in POLICY_KINDS:
            raise self.error(f"kind must be one of {', '.join(POLICY_KINDS)}, got {value!r}")
        return str(value)

    def flag(self, field: str, default: bool) -> bool:
        """An optional boolean field."""
        value = self.raw.get(field, default)
        if not isinstance(value, bool):
            raise self.error(f"{field} must be true or false, got {_type_name(value)} {value!r}")
        return value

    def strings(self, field: str, value: Any) -> tuple[str, ...]:
        """An optional list of non-empty strings (null or absent means empty), stripped."""
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.error(f"{field} must be a list of strings, got {_type_name(value)}")
        items: list[str] = []
        for position, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{field}[{position}] must be a string, got {_type_name(item)}")
            if not item.strip():
                raise self.error(f"{field}[{position}] must not be an empty string")
            items.append(item.strip())
        return tuple(items)

    def examples(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The safe and unsafe examples of the optional `examples` mapping."""
        value = self.raw.get("examples")
        if value is None:
            return (), ()
        if not isinstance(value, dict):
            raise self.error(f"examples must be a mapping with 'safe' and 'unsafe', got {_type_name(value)}")
        for key in value:
            if key not in EXAMPLE_KINDS:
                raise self.error(_unknown_field(str(key), EXAMPLE_KINDS, prefix="examples."))
        return (
            self.strings("examples.safe", value.get("safe")),
            self.strings("examples.unsafe", value.get("unsafe")),
        )


def _build_policy(raw: Any, path: Path, index: int) -> PolicyDefinition:
    """Validate one policy mapping and build its definition."""
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: policy #{index}: must be a mapping, got {_type_name(raw)}")
    fields = _Fields(raw, path, index)
    fields.check_keys()
    safe, unsafe = fields.examples()
    return PolicyDefinition(
        id=fields.policy_id(),
        version=fields.version(),
        name=fields.text("name"),
        description=fields.text("description", MAX_DESCRIPTION_CHARS),
        allowed=fields.strings("allowed", raw.get("allowed")),
        disallowed=fields.strings("disallowed", raw.get("disallowed")),
        safe_examples=safe,
        unsafe_examples=unsafe,
        threshold=fields.threshold(),
        enabled=fields.flag("enabled", default=True),
        source=str(path),
        kind=fields.kind(),
    )


def _unknown_field(key: str, known: tuple[str, ...], prefix: str = "") -> str:
    """'unknown field ...' with a did-you-mean suggestion and the list of known fields."""
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    listing = ", ".join(prefix + name for name in known)
    return f"unknown field {prefix + key!r}{hint}; known fields: {listing}"


def _type_name(value: object) -> str:
    """A YAML-flavoured name of a value's type, for messages."""
    names: tuple[tuple[type, str], ...] = (
        (bool, "bool"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (list, "list"),
        (dict, "mapping"),
    )
    if value is None:
        return "null"
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)
