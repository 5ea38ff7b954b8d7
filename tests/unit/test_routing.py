"""Which model scores which policy: the fixed-head model its own policies, GuardFormer the rest."""

from __future__ import annotations

from pathlib import Path

from models.policies import load_policies
from models.serving.routing import split_by_model

KNOWN = ("unsafe_content", "prompt_injection")


def registry(tmp_path: Path, unsafe_kind: str) -> Path:
    (tmp_path / "policies.yaml").write_text(
        "policies:\n"
        f"  - {{id: unsafe_content, version: 1, name: Safety, description: Harm, threshold: 0.5,"
        f" kind: {unsafe_kind}}}\n"
        "  - {id: pizza_only, version: 1, name: Pizza, description: Our pizzas, threshold: 0.9,"
        " kind: scope}\n"
        "  - {id: tax_advice, version: 1, name: Tax, description: Personal tax advice, threshold: 0.5}\n",
        encoding="utf-8",
    )
    return tmp_path / "policies.yaml"


def test_the_fixed_model_scores_the_restrictions_it_knows(tmp_path: Path) -> None:
    own, rest = split_by_model(load_policies(registry(tmp_path, "restrict")), KNOWN)
    assert [p.id for p in own] == ["unsafe_content"]
    assert rest.ids == ("pizza_only", "tax_advice")


def test_a_scope_policy_goes_to_guardformer_even_under_a_known_id(tmp_path: Path) -> None:
    own, rest = split_by_model(load_policies(registry(tmp_path, "scope")), KNOWN)
    assert own == []
    assert rest.ids == ("unsafe_content", "pizza_only", "tax_advice")
