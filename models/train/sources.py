"""How each shared dataset file becomes training targets, and which sources are held out.

This is the one place that says what a row of `../shared/data` means to the two policies
(`unsafe_content`, `prompt_injection`). Each row gets a source group and one target per policy:
1 (violates), 0 (does not) or -1 (unknown: left out of that policy's loss and metrics). A rule may
also drop a row. The rules, file by file:

Harmful requests -> unsafe_content 1, prompt_injection 0 (a harmful request is not an injection):
- advbench, strongreject, malicious_instruct, declare_harmful_qa (HarmfulQA, CatQA, DangerousQA;
  en, zh, vi), multijail (10 languages);
- harmbench (held out); its copyright requests are unknown for unsafe_content (an IP matter);
- do_not_answer: label 1 as above; label 0 ("treat the chatbot as a human") 0 for both; the risk
  areas the file leaves unlabeled (-1): unsafe_content unknown, prompt_injection 0;
- verazuo forbidden questions: harm categories as above; topic questions (financial, legal, health
  advice, political lobbying) 0 for both (only unsafe under a topic policy); "Gov Decision" mixes
  harmful and harmless questions: unsafe_content unknown.

Harmful content (user-written text, not requests) -> unsafe_content 1, prompt_injection 0, and its
benign counterparts 0 for both:
- toxigen (held out): hateful vs neutral statements about groups;
- hatecheck, multilingual_hatecheck: hateful vs non-hateful look-alikes (counter-speech, negation,
  reclaimed slurs, quotes, abuse of objects); multilingual rows whose annotators disagree with
  the gold label (-1): unsafe_content unknown;
- davidson_hate_offensive: hate_speech 1, neither 0; `offensive_language` (mostly casual
  profanity, and known to over-label African-American English) is dropped from unsafe_content
  (unknown) and kept as a prompt_injection negative;
- toxic_spans (Civil Comments rated toxic): 1 where annotators marked a toxic span; the rows
  rated toxic with no span marked are unknown for unsafe_content.

Prompt injection -> prompt_injection 1:
- slabs_pi, yanismiraoui_pi (held out): injections, unsafe_content 0; their benign rows 0, 0;
- neuralchemy_pi: direct injections unsafe_content 0; its jailbreak-style categories carry a
  payload that may be harmful: unsafe_content unknown; its wildguard jailbreaks wrap a harmful
  request: 1 for both; its HarmBench rows belong to harmbench (held out);
- jailbreak templates (verazuo jailbreak prompts, giskard): unsafe_content unknown (the payload
  is a placeholder); jbb_artifacts (an attack around a harmful request): 1 for both;
- bipia_indirect: an email, table or code context, clean (0, 0) and with an attack inserted
  (prompt_injection 1). Inserted attacks with a harmful payload (malware, fraud, ...) are unknown
  for unsafe_content, the harmless tasks 0. For training, an attacked context is cut down to the
  text around the inserted attack (a positive window, `crop_insertion`), and the same span of the
  clean context is added as a negative: the model learns from where the injection is, not from a
  long table whose first windows are clean. Email contexts are held out (whole texts).

Benign prompts -> 0 for both: self_instruct (held out), xquad_questions (12 languages), coconot
(held out): its look-alikes ("contrast") and benign originals 0, its dangerous, privacy and
offensive requests unsafe_content 1, its unlabeled rows (copyright, misinformation)
unsafe_content unknown.

Not used: hh_rlhf_harmless_base (unlabeled).

Held-out sources (`HELDOUT_GROUPS`) are never trained on: the model, its epochs and its
thresholds are chosen on them (see `models.train.protocol`), so those choices measure how the
model does on text from sources it never saw. Per policy they give:
- unsafe_content: requests (harmbench), content (toxigen), over-refusal look-alikes and
  dangerous requests (coconot), benign tasks (self_instruct), long emails (bipia_email);
- prompt_injection: multilingual injections (yanismiraoui), indirect injections in emails
  (bipia_email), and every held-out benign text above as negatives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

POLICIES = ("unsafe_content", "prompt_injection")
UNKNOWN = -1
#: One target per policy, in the order of `POLICIES`.
Targets = tuple[int, ...]
Row = dict[str, Any]

#: Source groups held out of training: model selection and thresholds are set on them.
HELDOUT_GROUPS = frozenset(
    {"harmbench", "yanismiraoui", "toxigen", "coconot", "self_instruct", "bipia_email"}
)

SAFE: Targets = (0, 0)
HARMFUL: Targets = (1, 0)
INJECTION: Targets = (0, 1)
BOTH: Targets = (1, 1)
NOT_INJECTION: Targets = (UNKNOWN, 0)
TEMPLATE: Targets = (UNKNOWN, 1)


@dataclass(frozen=True, slots=True)
class Mapped:
    """A row's source group and targets; `text` replaces the row's text when set (a crop), `split`
    the row's split (None: the file's own split, else a hash of the text)."""

    group: str
    targets: Targets
    text: str | None = None
    split: str | None = None


#: A file's rule: a row -> its mapping, or None to drop the row.
Rule = Callable[[Row], Mapped | None]


def _labelled(
    group: str, positive: Targets | None, negative: Targets | None = SAFE, unknown: Targets | None = None
) -> Rule:
    """A rule by the row's label: 1 -> `positive`, 0 -> `negative`, -1 -> `unknown` (None: drop)."""
    by_label = {1: positive, 0: negative, UNKNOWN: unknown}

    def rule(row: Row) -> Mapped | None:
        targets = by_label.get(row["label"])
        return None if targets is None else Mapped(group, targets)

    return rule


def _benign(group: str) -> Rule:
    """A file of benign prompts: label 0 -> 0 for both; anything else is dropped."""
    return _labelled(group, None)


def _category(row: Row) -> str:
    return str(row.get("category") or "")


def _harmbench(row: Row) -> Mapped:
    return Mapped("harmbench", NOT_INJECTION if _category(row).startswith("copyright") else HARMFUL)


_TOPIC_BENIGN = frozenset({"Financial Advice", "Legal Opinion", "Health Consultation", "Political Lobbying"})


def _verazuo(row: Row) -> Mapped:
    category = _category(row)
    if category.startswith("jailbreak="):
        return Mapped("verazuo", TEMPLATE)
    if category in _TOPIC_BENIGN:
        return Mapped("verazuo", SAFE)
    if category == "Gov Decision":
        return Mapped("verazuo", NOT_INJECTION)
    return Mapped("verazuo", HARMFUL)


_JAILBREAK_STYLE = frozenset({"jailbreak", "adversarial", "crescendo", "many_shot"})


def _neuralchemy(row: Row) -> Mapped:
    subset = str(row["source"]).rsplit("(", 1)[-1].rstrip(")")
    if subset == "harmbench":
        return Mapped("harmbench", HARMFUL)
    if row["label"] == 0:
        return Mapped("neuralchemy", SAFE)
    if subset == "wildguard_judgecomp":
        return Mapped("neuralchemy", BOTH)
    return Mapped("neuralchemy", TEMPLATE if _category(row) in _JAILBREAK_STYLE else INJECTION)


def _davidson(row: Row) -> Mapped:
    category = _category(row)
    if category == "hate_speech":
        return Mapped("davidson", HARMFUL)
    return Mapped("davidson", SAFE if category == "neither" else NOT_INJECTION)


def _toxic_spans(row: Row) -> Mapped:
    marked = _category(row).endswith("with_toxic_span")
    return Mapped("toxic_spans", HARMFUL if marked else NOT_INJECTION)


#: BIPIA attack categories whose payload is a harmless task (the rest may be harmful).
_BIPIA_HARMLESS_TASKS = frozenset(
    {
        "Alphanumeric Substitution",
        "Anagramming",
        "Base Encoding",
        "Business Intelligence",
        "Clickbait",
        "Content Creation",
        "Conversational Agent",
        "Emoji Substitution",
        "Entertainment",
        "Homophonic Substitution",
        "Information Retrieval",
        "Instruction",
        "Language Translation",
        "Learning and Tutoring",
        "Marketing & Advertising",
        "Misspelling Intentionally",
        "Persuasion",
        "Programming Help",
        "Research Assistance",
        "Reverse Text",
        "Sentiment Analysis",
        "Social Interaction",
        "Space Removal & Grouping",
        "Substitution Ciphers",
        "Task Automation",
    }
)


def _bipia(row: Row) -> Mapped:
    """Whole BIPIA texts (`map_file` replaces the training contexts' attacks by crops).

    The category is `kind|context|split|attack|position`; BIPIA's test contexts stay in test.
    """
    parts = _category(row).split("|")
    group = f"bipia_{parts[1]}"
    split = "test" if parts[2:3] == ["test"] else None
    if row["label"] == 0:
        return Mapped(group, SAFE, split=split)
    harmless = len(parts) > 3 and parts[3] in _BIPIA_HARMLESS_TASKS
    return Mapped(group, INJECTION if harmless else TEMPLATE, split=split)


RULES: dict[str, Rule] = {
    "advbench": _labelled("advbench", HARMFUL),
    "strongreject": _labelled("strongreject", HARMFUL),
    "malicious_instruct": _labelled("malicious_instruct", HARMFUL),
    "declare_harmful_qa": _labelled("declare_harmful_qa", HARMFUL),
    "multijail": _labelled("multijail", HARMFUL),
    "harmbench": _harmbench,
    "do_not_answer": _labelled("do_not_answer", HARMFUL, unknown=NOT_INJECTION),
    "verazuo_jailbreak_llms": _verazuo,
    "toxigen": _labelled("toxigen", HARMFUL),
    "hatecheck": _labelled("hatecheck", HARMFUL),
    "multilingual_hatecheck": _labelled("multilingual_hatecheck", HARMFUL, unknown=NOT_INJECTION),
    "davidson_hate_offensive": _davidson,
    "toxic_spans": _toxic_spans,
    "slabs_pi": _labelled("slabs", INJECTION),
    "yanismiraoui_pi": _labelled("yanismiraoui", INJECTION),
    "neuralchemy_pi": _neuralchemy,
    "giskard_prompt_injections": _labelled("giskard", TEMPLATE),
    "jbb_artifacts": _labelled("jbb_artifacts", BOTH),
    "bipia_indirect": _bipia,
    "self_instruct": _benign("self_instruct"),
    "xquad_questions": _benign("xquad"),
    "coconot": _labelled("coconot", HARMFUL, unknown=NOT_INJECTION),
}
#: The dataset files read, in order (file stem = `RULES` key).
DATASETS = tuple(RULES)


def row_mapping(name: str, row: Row) -> Mapped | None:
    """The mapping of one row of the dataset file `name` (file stem), or None to drop it."""
    rule = RULES.get(name)
    if rule is None:
        raise ValueError(f"no labeling rule for dataset {name!r}")
    return rule(row)


# --- BIPIA: attacks cut down to the text around them ----------------------------------------------

#: Characters of context kept on each side of an inserted attack.
CROP_CONTEXT_CHARS = 300
_KEY_CHARS = 48


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def insertion_span(clean: str, attacked: str) -> tuple[int, int] | None:
    """(start, end) in `attacked` of the text inserted into `clean`, or None if it is not an insertion."""
    prefix = _common_prefix(clean, attacked)
    suffix = _common_prefix(clean[prefix:][::-1], attacked[prefix:][::-1])
    if prefix + suffix != len(clean) or len(attacked) <= len(clean):
        return None
    return prefix, len(attacked) - suffix


def crop_insertion(clean: str, attacked: str, context: int = CROP_CONTEXT_CHARS) -> tuple[str, str] | None:
    """(attacked crop, clean crop): the inserted text with `context` characters on each side, and
    the same surroundings without it; None when `attacked` is not `clean` with text inserted."""
    span = insertion_span(clean, attacked)
    if span is None:
        return None
    start, end = span
    before = attacked[max(0, start - context) : start]
    after = attacked[end : end + context]
    return before + attacked[start:end] + after, before + after


class CleanIndex:
    """Clean contexts indexed by their first and last characters, to pair attacks quickly."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._by_head: dict[str, list[str]] = {}
        self._by_tail: dict[str, list[str]] = {}
        for text in texts:
            self._by_head.setdefault(text[:_KEY_CHARS], []).append(text)
            self._by_tail.setdefault(text[-_KEY_CHARS:], []).append(text)

    def clean_of(self, attacked: str) -> str | None:
        """The clean context `attacked` was made from by inserting text, if any."""
        candidates = (
            *self._by_head.get(attacked[:_KEY_CHARS], ()),
            *self._by_tail.get(attacked[-_KEY_CHARS:], ()),
        )
        return next((c for c in candidates if insertion_span(c, attacked) is not None), None)


def _cropped(row: Row, mapped: Mapped, index: CleanIndex) -> Iterator[tuple[Row, Mapped]]:
    """An attacked training context as (attack crop, clean crop); whole when it cannot be paired."""
    clean = index.clean_of(str(row["text"]))
    crops = None if clean is None else crop_insertion(clean, str(row["text"]))
    if clean is None or crops is None:
        yield row, mapped
        return
    split = mapped.split or context_split(clean)
    yield row, Mapped(mapped.group, mapped.targets, crops[0], split)
    yield row, Mapped(mapped.group, SAFE, crops[1], split)


def hash_bucket(text: str) -> int:
    """A stable bucket in [0, 100) from the text alone."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100


def hash_split(text: str) -> str:
    """A stable 70/15/15 train/validation/test assignment from the text alone."""
    bucket = hash_bucket(text)
    return "train" if bucket < 70 else "validation" if bucket < 85 else "test"


def context_split(text: str) -> str:
    """train or validation (85/15) from a hash of a clean context, shared by all its variants."""
    return "validation" if hash_bucket(text) < 15 else "train"


def map_file(name: str, rows: Iterable[Row]) -> Iterator[tuple[Row, Mapped]]:
    """(row, mapping) of every kept row of a dataset file; BIPIA training attacks become crops."""
    kept = [(row, mapped) for row in rows if (mapped := row_mapping(name, row)) is not None]
    if name != "bipia_indirect":
        yield from kept
        return
    index = CleanIndex(str(row["text"]) for row, mapped in kept if mapped.targets == SAFE)
    for row, mapped in kept:
        if mapped.targets[1] == 1 and mapped.group not in HELDOUT_GROUPS:
            yield from _cropped(row, mapped, index)
        elif mapped.group not in HELDOUT_GROUPS and mapped.split is None:
            yield row, Mapped(mapped.group, mapped.targets, split=context_split(str(row["text"])))
        else:
            yield row, mapped
