"""The instruction input of GuardFormer, built the same way for training and serving.

For a policy P and a prompt x the model reads, as token ids:

    [CLS] <policy text> [SEP] Query: <x> [SEP]

where the policy text is `"<name>. <description>"`. The policy part is tokenized once per policy
and cut to `max_policy_tokens`; the prompt fills what is left of `max_length` and a longer
prompt is split into overlapping windows, each paired with the policy (its score is the maximum
over its windows). Tokenizing the parts apart and joining the ids gives the same ids as
tokenizing the joined text, since a BERT tokenizer splits words at white space first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from models.base.contract import Encoded, IdArray
from models.base.windows import raw_tokenizer, special_id, window_starts

QUERY_MARKER = "Query:"


class PolicyLike(Protocol):
    """What the instruction needs of a policy definition."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...


def policy_text(policy: PolicyLike) -> str:
    """The words of a policy that the model reads: its name, then its description."""
    name = " ".join(policy.name.split()).rstrip(".")
    return f"{name}. {' '.join(policy.description.split())}"


def instruction_text(policy: PolicyLike, prompt: str) -> str:
    """The instruction as text (what `InstructionTokenizer.pair` encodes), for display and tests."""
    return f"{policy_text(policy)} [SEP] {QUERY_MARKER} {prompt}"


@dataclass(frozen=True, slots=True)
class EncodedPolicy:
    """A policy's ids, ready to be joined with any prompt: [CLS] policy [SEP] Query:"""

    prefix: IdArray


class InstructionTokenizer:
    """Builds the token ids of (policy, prompt) pairs."""

    def __init__(self, tokenizer_file: Path, max_length: int = 256, max_policy_tokens: int = 128) -> None:
        if max_policy_tokens < 8 or max_length < max_policy_tokens + 16:
            raise ValueError(
                f"max_length ({max_length}) must leave at least 16 tokens after the policy "
                f"({max_policy_tokens} tokens at most)"
            )
        self.max_length = max_length
        self.max_policy_tokens = max_policy_tokens
        self._tokenizer = raw_tokenizer(tokenizer_file)
        self.cls_id = special_id(self._tokenizer, "[CLS]")
        self.sep_id = special_id(self._tokenizer, "[SEP]")
        self.pad_id = special_id(self._tokenizer, "[PAD]")
        self.mask_id = special_id(self._tokenizer, "[MASK]")
        self.vocab_size = self._tokenizer.get_vocab_size()
        self._query_ids = self._ids(QUERY_MARKER)

    def _ids(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    @property
    def prompt_budget(self) -> int:
        """Most prompt tokens in one window, whatever the policy: the rest of `max_length`."""
        return self.max_length - self.max_policy_tokens - len(self._query_ids) - 3

    def encode_policy(self, policy: PolicyLike) -> EncodedPolicy:
        ids = self._ids(policy_text(policy))[: self.max_policy_tokens]
        prefix = [self.cls_id, *ids, self.sep_id, *self._query_ids]
        return EncodedPolicy(np.asarray(prefix, dtype=np.int64))

    def encode_prompts(self, texts: Sequence[str]) -> list[Encoded]:
        """Each prompt as windows of at most `prompt_budget` content ids (no special tokens)."""
        budget = self.prompt_budget
        stride = max(1, budget * 3 // 4)
        encoded = []
        for encoding in self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            starts = window_starts(len(ids), budget, stride)
            encoded.append(Encoded(tuple(ids[s : s + budget] for s in starts)))
        return encoded

    def pair(self, policy: EncodedPolicy, prompt_window: IdArray) -> IdArray:
        """[CLS] policy [SEP] Query: prompt [SEP]"""
        sep = np.asarray([self.sep_id], dtype=np.int64)
        return np.concatenate([policy.prefix, prompt_window, sep])

    def encode_pair(self, policy: PolicyLike, prompt: str) -> IdArray:
        """The ids of one (policy, prompt) instruction, the prompt cut to one window (training)."""
        window = self.encode_prompts([prompt])[0].windows[0]
        return self.pair(self.encode_policy(policy), window)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=False))
