"""A generated model card for a trained model directory: what it scores, from what data, how well."""

from __future__ import annotations

from typing import Any

from models.embedder.config import GuardConfig


def _policy_rows(metrics: dict[str, Any], split: str) -> list[str]:
    rows = []
    for policy, m in metrics.get(split, {}).items():
        rows.append(
            f"| {split} | {policy} | {m['n_positive']} / {m['n_negative']} | {m['precision']:.3f} | "
            f"{m['recall']:.3f} | {m['f1']:.3f} | {m['fpr']:.3f} | {m['auprc']:.3f} |"
        )
    return rows


def render_model_card(config: GuardConfig, metrics: dict[str, Any]) -> str:
    """Markdown: policies and thresholds, the command, the data per split, the metrics table."""
    policies = "\n".join(
        f"- `{p.id}` (version {p.version}), threshold {p.threshold:.4f}" for p in config.policies
    )
    splits = "\n".join(
        f"- {split}: {figures['prompts']} prompts from {', '.join(sorted(figures['groups']))}"
        for split, figures in metrics["data"].items()
    )
    table = [
        "| split | policy | positives / negatives | precision | recall | F1 | FPR | AUPRC |",
        "|---|---|---|---|---|---|---|---|",
        *_policy_rows(metrics, "test"),
        *_policy_rows(metrics, "heldout"),
    ]
    return "\n".join(
        [
            f"# {config.name} {config.version}",
            "",
            f"An embedder guard: sentence embeddings ({metrics['encoder']}) and a "
            f"{metrics['settings']['head']} head with one sigmoid output per policy. Windows of "
            f"{config.max_length} tokens, {config.window_stride} apart; a prompt scores the maximum over "
            "its windows.",
            "",
            "## Policies",
            "",
            policies,
            "",
            f"Thresholds: {metrics['calibration']}.",
            "",
            "## Training",
            "",
            f"    {metrics['command']}",
            "",
            splits,
            "",
            "## Metrics",
            "",
            *table,
            "",
            "The full figures, per source included, are in `metrics.json`.",
            "",
        ]
    )
