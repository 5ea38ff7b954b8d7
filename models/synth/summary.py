"""The summary of a synth run: printed at the end and written to `OUT.summary.json`.

Counts cover the whole plan (what earlier, interrupted runs finished included): generation
requests, of which ok and failed (by reason; `ok + failed == requests`), reflection outcomes,
duplicates, balancing and rows per policy and label. Tokens are given for the whole plan and
for this run alone, with this run's completion tokens per second and, when prices are given, a
cost estimate. `tokens.estimated` is true when some endpoint reported no usage and the counts
were estimated from text length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.synth.assemble import AssemblyCounts
from models.synth.prompts import LABEL_WORDS
from models.synth.requests import GenerationRequest
from models.synth.runner import AGREED, DISAGREED, UNPARSED, RunStats
from models.synth.workdir import WorkDir


@dataclass(frozen=True, slots=True)
class Prices:
    """Prices per 1,000 prompt (input) and completion (output) tokens; None when not given."""

    input_per_1k: float | None = None
    output_per_1k: float | None = None

    @property
    def given(self) -> bool:
        return self.input_per_1k is not None or self.output_per_1k is not None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * (self.input_per_1k or 0.0) + completion_tokens * (self.output_per_1k or 0.0)
        ) / 1000


def plan_tokens(plan: Sequence[GenerationRequest], work: WorkDir) -> tuple[int, int, bool]:
    """Prompt and completion tokens of every recorded request of the plan, and whether estimated."""
    prompt = completion = 0
    estimated = False
    for request in plan:
        for record in (work.generated.get(request.key), work.reflected.get(request.key)):
            if record is not None:
                prompt += int(record.get("prompt_tokens", 0))
                completion += int(record.get("completion_tokens", 0))
                estimated = estimated or bool(record.get("tokens_estimated"))
    return prompt, completion, estimated


def build_summary(
    *,
    output: str,
    generator: str,
    plan: Sequence[GenerationRequest],
    work: WorkDir,
    counts: AssemblyCounts,
    stats: RunStats,
    reflect: bool,
    prices: Prices,
) -> dict[str, Any]:
    """The summary as a JSON-ready dictionary (see the module docstring)."""
    prompt, completion, estimated = plan_tokens(plan, work)
    policies = list(dict.fromkeys(request.policy.id for request in plan))
    per_policy = {
        policy: {word: counts.rows[(policy, label)] for label, word in LABEL_WORDS.items()}
        for policy in policies
    }
    summary: dict[str, Any] = {
        "output": output,
        "generator": generator,
        "policies": policies,
        "requests": {
            "generation": counts.requests,
            "ok": counts.ok,
            "failed": counts.failed,
            "resumed": stats.resumed,
            "sent_this_run": {"generation": stats.generation_sent, "reflection": stats.reflection_sent},
        },
        "failures": dict(sorted(counts.failures.items())),
        "repaired_json": counts.repaired,
        "reflection": _reflection(counts) if reflect else {"skipped": True},
        "duplicates": {"exact": counts.exact_duplicates, "near": counts.near_duplicates},
        "balance_removed": counts.balance_removed,
        "rows": {"total": sum(counts.rows.values()), "per_policy": per_policy, "splits": dict(counts.splits)},
        "tokens": {
            "prompt": prompt,
            "completion": completion,
            "estimated": estimated or stats.tokens_estimated,
            "this_run": {
                "prompt": stats.prompt_tokens,
                "completion": stats.completion_tokens,
                "completion_per_s": round(stats.completion_tokens / stats.seconds, 2)
                if stats.seconds
                else 0.0,
            },
        },
        "wall_seconds": round(stats.seconds, 2),
    }
    if prices.given:
        summary["cost_estimate"] = {
            "this_run": round(prices.cost(stats.prompt_tokens, stats.completion_tokens), 6),
            "all_requests": round(prices.cost(prompt, completion), 6),
        }
    return summary


def _reflection(counts: AssemblyCounts) -> dict[str, Any]:
    return {
        AGREED: counts.reflection[AGREED],
        DISAGREED: counts.reflection[DISAGREED],
        UNPARSED: counts.reflection[UNPARSED],
        "relabelled": counts.reflection["relabelled"],
        "dropped": counts.reflection["dropped"],
        "unparsed_reasons": dict(sorted(counts.reflection_unparsed.items())),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few human-readable lines."""
    requests = summary["requests"]
    tokens = summary["tokens"]
    this_run = tokens["this_run"]
    sent = requests["sent_this_run"]
    lines = [
        f"output: {summary['output']} ({summary['rows']['total']} rows; splits {summary['rows']['splits']})",
        f"generator: {summary['generator']}",
        f"requests: {requests['generation']} ({requests['ok']} ok, {requests['failed']} failed,"
        f" {requests['resumed']} finished by an earlier run); sent this run:"
        f" {sent['generation']} generation, {sent['reflection']} reflection",
        f"failures: {_pairs(summary['failures'])}; repaired JSON: {summary['repaired_json']}",
    ]
    reflection = summary["reflection"]
    if reflection.get("skipped"):
        lines.append("reflection: skipped")
    else:
        lines.append(
            f"reflection: {reflection[AGREED]} agreed, {reflection[DISAGREED]} disagreed"
            f" ({reflection['relabelled']} relabelled, {reflection['dropped']} dropped),"
            f" {reflection[UNPARSED]} unparsed {_pairs(reflection['unparsed_reasons'], brackets=True)}"
        )
    lines.append(
        f"duplicates removed: {summary['duplicates']['exact']} exact, {summary['duplicates']['near']} near;"
        f" balancing removed {summary['balance_removed']}"
    )
    for policy, labels in summary["rows"]["per_policy"].items():
        lines.append(f"rows {policy}: {_pairs(labels)}")
    estimated = " (estimated)" if tokens["estimated"] else ""
    lines.append(
        f"tokens{estimated}: {tokens['prompt']} prompt, {tokens['completion']} completion; this run"
        f" {this_run['prompt']} prompt, {this_run['completion']} completion,"
        f" {this_run['completion_per_s']} completion tokens/s, {summary['wall_seconds']} s"
    )
    if "cost_estimate" in summary:
        cost = summary["cost_estimate"]
        lines.append(
            f"cost estimate: {cost['this_run']:.4f} this run, {cost['all_requests']:.4f} for all requests"
        )
    return "\n".join(lines)


def _pairs(mapping: dict[str, Any], brackets: bool = False) -> str:
    text = ", ".join(f"{key} {value}" for key, value in mapping.items()) or "none"
    return f"({text})" if brackets else text
