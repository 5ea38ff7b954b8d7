"""New policy YAML files generated from seed policies (the pretraining-corpus step).

Request `i` shows the generator three seed policies (rotating through all of them, with a few
rows of each from `--seed-rows` when given) and asks for one new policy about domain
`POLICY_DOMAINS[i]` (round-robin). The answer is read as JSON, its id is turned into a valid id
(lowercase, `_` for anything else), `version: "1"`, `threshold: 0.5` and `enabled: true` are
added, and the file is written and loaded back with the project's registry
(`models.policies.load_policies`). A policy is dropped, and counted, when it cannot be read,
fails the registry's checks, lists no allowed or no disallowed behaviour, or reuses the id of a
seed, of a policy already in the output directory or of one accepted earlier in the run.

Finished requests are recorded in `DIR.work/policies.jsonl` under a key made of the seed set's
fingerprint and the index, so a rerun skips them, as a row run does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from models.policies import PolicyDefinition, PolicyError, PolicySet, load_policies
from models.synth.generators import Generator, GeneratorRequestError
from models.synth.parsing import FailureReason, ParseFailure, read_object
from models.synth.prompts import COMPLIES, POLICY_DOMAINS, VIOLATES, new_policy_messages
from models.synth.workdir import JsonlLog

log = logging.getLogger("guardstream.synth")

SEEDS_SHOWN = 3
ROWS_SHOWN_PER_LABEL = 2
NEW_POLICY_THRESHOLD = 0.5
POLICIES_LOG = "policies.jsonl"
_NOT_ID_CHARACTER = re.compile(r"[^a-z0-9_.-]+")

SeedRows = Mapping[str, Mapping[int, Sequence[str]]]


@dataclass(frozen=True, slots=True)
class NewPolicySettings:
    """How new-policy requests are sent."""

    max_tokens: int = 700
    temperature: float = 0.9
    seed: int = 0
    concurrency: int = 4


@dataclass
class NewPolicyResult:
    """The policy files written (this run and earlier ones) and the failures by reason."""

    written: list[Path] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    sent: int = 0


def load_seed_policies(paths: Sequence[Path]) -> PolicySet:
    """The policies of all seed files and directories together (ids must be unique)."""
    return PolicySet(tuple(policy for path in paths for policy in load_policies(path)))


def load_seed_rows(path: Path) -> dict[str, dict[int, list[str]]]:
    """Texts by policy and label from a JSONL file of rows `{"text", "policy", "label", ...}`.

    Lines that are not such rows are skipped.
    """
    rows: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            try:
                row = json.loads(line)
                text, policy, label = row["text"], row["policy"], int(row["label"])
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(text, str) and isinstance(policy, str) and label in (VIOLATES, COMPLIES):
                rows[policy][label].append(text)
    return {policy: dict(labels) for policy, labels in rows.items()}


def policy_id_from(value: Any, fallback: Any) -> str:
    """A registry-valid id from the proposed id (or, without one, the name); '' when nothing is left."""
    source = value if isinstance(value, str) and value.strip() else fallback
    if not isinstance(source, str):
        return ""
    slug = _NOT_ID_CHARACTER.sub("_", source.strip().casefold()).strip("_.-")
    return slug[:64].rstrip("_.-")


def policy_document(obj: dict[str, Any], policy_id: str) -> dict[str, Any]:
    """The YAML mapping of a proposed policy: its known fields as given, plus version and threshold."""
    document: dict[str, Any] = {"id": policy_id, "version": "1"}
    for name in ("name", "description", "allowed", "disallowed", "examples"):
        if name in obj:
            document[name] = obj[name]
    document["threshold"] = NEW_POLICY_THRESHOLD
    document["enabled"] = True
    return document


def _shown(seeds: Sequence[PolicyDefinition], index: int) -> list[PolicyDefinition]:
    count = min(SEEDS_SHOWN, len(seeds))
    return [seeds[(index * count + offset) % len(seeds)] for offset in range(count)]


def _rows_shown(
    seed_rows: SeedRows, shown: Sequence[PolicyDefinition], index: int
) -> dict[str, dict[int, list[str]]]:
    picked: dict[str, dict[int, list[str]]] = {}
    for policy in shown:
        labels = seed_rows.get(policy.id, {})
        picked[policy.id] = {
            label: [
                texts[(index * ROWS_SHOWN_PER_LABEL + k) % len(texts)]
                for k in range(min(ROWS_SHOWN_PER_LABEL, len(texts)))
            ]
            for label, texts in labels.items()
            if texts
        }
    return picked


class PolicyWriter:
    """Generates, checks and writes new policies into one directory (see the module docstring)."""

    def __init__(
        self,
        generator: Generator,
        seeds: PolicySet,
        out_dir: Path,
        settings: NewPolicySettings,
        seed_rows: SeedRows | None = None,
    ) -> None:
        self.generator = generator
        self.seeds = seeds
        self.out_dir = out_dir
        self.settings = settings
        self.seed_rows = seed_rows or {}
        self.log = JsonlLog(out_dir.with_name(out_dir.name + ".work") / POLICIES_LOG)
        self.taken = set(seeds.ids) | _existing_ids(out_dir)
        self.result = NewPolicyResult()
        self._lock = asyncio.Lock()

    def key(self, index: int) -> str:
        return f"policy:{self.seeds.fingerprint}:{index}"

    async def run(self, count: int) -> NewPolicyResult:
        """Finish `count` new-policy requests; returns the files and failure counts."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        semaphore = asyncio.Semaphore(self.settings.concurrency)
        self.result.requests = count
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(count):
                    group.create_task(self._one(index, semaphore))
        finally:
            self.log.close()
        self.result.written.sort()
        return self.result

    async def _one(self, index: int, semaphore: asyncio.Semaphore) -> None:
        done = self.log.get(self.key(index))
        if done is not None:
            self._count(done)
            return
        seeds = list(self.seeds)
        shown = _shown(seeds, index)
        domain = POLICY_DOMAINS[index % len(POLICY_DOMAINS)]
        messages = new_policy_messages(
            shown, domain, sorted(self.taken), _rows_shown(self.seed_rows, shown, index)
        )
        async with semaphore:
            self.result.sent += 1
            try:
                completion = await self.generator.complete(
                    messages,
                    max_tokens=self.settings.max_tokens,
                    temperature=self.settings.temperature,
                    seed=self.settings.seed * 100_003 + index,
                )
            except GeneratorRequestError as exc:
                log.warning("new policy %d failed: %s", index, exc)
                self.result.failures[FailureReason.GENERATOR_ERROR.value] += 1
                return
        async with self._lock:  # id checks and file writes one at a time
            record = self._accept(index, domain, completion.text)
            self.log.append(record)
            self._count(record)

    def _count(self, record: dict[str, Any]) -> None:
        if record["status"] == "ok":
            path = self.out_dir / record["file"]
            if path.is_file():
                self.result.written.append(path)
        else:
            self.result.failures[record["reason"]] += 1

    def _accept(self, index: int, domain: str, output: str) -> dict[str, Any]:
        """Check one answer and write its policy file; the record of what happened."""
        record: dict[str, Any] = {"key": self.key(index), "domain": domain, "generator": self.generator.name}
        checked = self._check(output)
        if isinstance(checked, ParseFailure):
            log.debug("new policy %d: %s (%s)", index, checked.reason.value, checked.detail)
            return record | {
                "status": "failed",
                "reason": checked.reason.value,
                "detail": checked.detail,
                "output": output,
            }
        policy_id, text = checked
        path = self.out_dir / f"{policy_id}.yaml"
        path.write_text(text, encoding="utf-8")
        self.taken.add(policy_id)
        return record | {"status": "ok", "id": policy_id, "file": path.name}

    def _check(self, output: str) -> tuple[str, str] | ParseFailure:
        """The id and YAML text of a valid new policy, or why the answer gives none."""
        read = read_object(output)
        if isinstance(read, ParseFailure):
            return read
        obj, _ = read
        policy_id = policy_id_from(obj.get("id"), obj.get("name"))
        if not policy_id:
            return ParseFailure(FailureReason.INVALID_POLICY, "no usable id or name")
        if policy_id in self.taken:
            return ParseFailure(FailureReason.DUPLICATE_POLICY_ID, policy_id)
        header = (
            f"# Generated by guardstream synth from the seed policies {', '.join(self.seeds.ids)};"
            " review before use.\n"
        )
        text = header + yaml.safe_dump(
            policy_document(obj, policy_id), sort_keys=False, allow_unicode=True, width=100
        )
        problem = _registry_problem(self.out_dir, policy_id, text)
        if problem is not None:
            return ParseFailure(FailureReason.INVALID_POLICY, problem)
        return policy_id, text


def _registry_problem(out_dir: Path, policy_id: str, text: str) -> str | None:
    """What the registry (and the need for behaviours to target) says is wrong, or None."""
    candidate = out_dir / f".{policy_id}.yaml.check"
    candidate.write_text(text, encoding="utf-8")
    try:
        policy = load_policies(candidate).policies[0]
    except PolicyError as exc:
        return str(exc).replace(str(candidate), f"{policy_id}.yaml")
    finally:
        candidate.unlink(missing_ok=True)
    if not policy.allowed or not policy.disallowed:
        return "needs at least one allowed and one disallowed behaviour"
    return None


def _existing_ids(out_dir: Path) -> set[str]:
    """Ids of the policies already in the output directory (none when it has no valid ones)."""
    if not out_dir.is_dir() or not any(out_dir.glob("*.y*ml")):
        return set()
    try:
        return set(load_policies(out_dir).ids)
    except PolicyError:
        return {path.stem for path in out_dir.glob("*.y*ml")}
