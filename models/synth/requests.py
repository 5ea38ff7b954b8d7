"""The generation requests of a run: which policy, label and index, under a deterministic key.

A request's key is `policy id:policy fingerprint:label:index`. It names the request across
runs: a rerun with the same policies skips every key the work directory already holds, a larger
`--per-label` adds only the new indexes, and an edited policy (new fingerprint) starts afresh.
The plan interleaves policies and labels (index 0 of every policy and label first, then index 1,
...) so an interrupted run has even coverage. Each request has its own sampling seed, derived
from the run seed and the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from models.policies import PolicyDefinition
from models.synth.prompts import COMPLIES, VIOLATES, GenerationTarget, generation_target

LABELS = (VIOLATES, COMPLIES)


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One prompt to generate: `index`-th of `label` for `policy`."""

    policy: PolicyDefinition
    label: int
    index: int

    @property
    def key(self) -> str:
        return f"{self.policy.id}:{self.policy.fingerprint}:{self.label}:{self.index}"

    @property
    def target(self) -> GenerationTarget:
        return generation_target(self.policy, self.label, self.index)

    def seed(self, run_seed: int) -> int:
        """The sampling seed of this request: fixed by the run seed and the key, below 2**31."""
        digest = hashlib.sha256(f"{run_seed}:{self.key}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def plan_requests(policies: Sequence[PolicyDefinition], per_label: int) -> list[GenerationRequest]:
    """`per_label` requests of each label for each policy, interleaved (see the module docstring)."""
    return [
        GenerationRequest(policy, label, index)
        for index in range(per_label)
        for policy in policies
        for label in LABELS
    ]
