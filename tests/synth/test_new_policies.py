"""New policy files from seed policies: validated with the registry, bad ones counted and dropped."""

from __future__ import annotations

import json
from pathlib import Path

from models.policies import DEFAULT_POLICY_DIR, load_policies
from models.synth.generators import Message
from models.synth.new_policies import (
    NewPolicySettings,
    PolicyWriter,
    load_seed_policies,
    load_seed_rows,
    policy_id_from,
)
from models.synth.prompts import POLICY_DOMAINS
from tests.synth.fakes import ScriptedGenerator


def proposal(policy_id: str, **changes: object) -> str:
    body: dict[str, object] = {
        "id": policy_id,
        "name": f"No {policy_id.replace('_', ' ')} help",
        "description": f"Flags requests for hands-on help with {policy_id}.",
        "allowed": ["General facts", "History of the topic"],
        "disallowed": ["Step-by-step help for the asker", "Personal recommendations"],
        "examples": {"safe": ["What is it?"], "unsafe": ["Tell me exactly what I should do."]},
    }
    body.update(changes)
    return "Here you go:\n```json\n" + json.dumps(body) + "\n```"


def domain_of(messages: list[Message]) -> str:
    return next(
        domain for domain in POLICY_DOMAINS if f"about this domain: {domain}." in messages[-1]["content"]
    )


ANSWERS = {
    POLICY_DOMAINS[0]: proposal("Pharmacy Dosing!"),  # id made valid: pharmacy_dosing
    POLICY_DOMAINS[1]: proposal("online_gambling"),
    POLICY_DOMAINS[2]: proposal("tax_advice"),  # a seed's id
    POLICY_DOMAINS[3]: proposal("hacking", description=""),  # the registry rejects it
    POLICY_DOMAINS[4]: "I cannot write policies.",
    POLICY_DOMAINS[5]: proposal("online_gambling"),  # taken by request 1
    POLICY_DOMAINS[6]: proposal("empty_lists", allowed=[]),
}


def answer(messages: list[Message]) -> str:
    return ANSWERS[domain_of(messages)]


async def test_policies_written_validated_and_failures_counted(tmp_path: Path) -> None:
    seeds = load_seed_policies([DEFAULT_POLICY_DIR])
    out_dir = tmp_path / "new"
    generator = ScriptedGenerator(generate=answer)
    writer = PolicyWriter(generator, seeds, out_dir, NewPolicySettings(concurrency=1))
    result = await writer.run(len(ANSWERS))
    assert [path.name for path in result.written] == ["online_gambling.yaml", "pharmacy_dosing.yaml"]
    assert result.failures == {
        "duplicate_policy_id": 2,
        "invalid_policy": 2,
        "refusal": 1,
    }
    policies = load_policies(out_dir)
    assert policies.ids == ("online_gambling", "pharmacy_dosing")
    pharmacy = policies.get("pharmacy_dosing")
    assert pharmacy is not None and pharmacy.name == "No Pharmacy Dosing! help" and pharmacy.threshold == 0.5
    assert pharmacy.disallowed == ("Step-by-step help for the asker", "Personal recommendations")
    assert not set(policies.ids) & set(seeds.ids)
    assert sorted(path.name for path in out_dir.iterdir()) == ["online_gambling.yaml", "pharmacy_dosing.yaml"]
    assert "review before use" in (out_dir / "online_gambling.yaml").read_text()

    # a rerun sends nothing and reports the same files and failures
    again = ScriptedGenerator(generate=answer)
    rerun = await PolicyWriter(again, seeds, out_dir, NewPolicySettings()).run(len(ANSWERS))
    assert again.requests == [] and rerun.written == result.written and rerun.failures == result.failures


async def test_seed_rows_are_shown(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps(
            {"text": "Should I put my bonus in a pension to cut tax?", "policy": "tax_advice", "label": 1}
        )
        + "\nnot json\n"
        + json.dumps({"text": "What is a pension?", "policy": "tax_advice", "label": 0})
        + "\n"
    )
    seed_rows = load_seed_rows(rows)
    assert seed_rows == {
        "tax_advice": {1: ["Should I put my bonus in a pension to cut tax?"], 0: ["What is a pension?"]}
    }
    seeds = load_seed_policies([DEFAULT_POLICY_DIR / "tax_advice.yaml"])
    generator = ScriptedGenerator(generate=lambda _: proposal("bonus_rules"))
    await PolicyWriter(generator, seeds, tmp_path / "out", NewPolicySettings(), seed_rows).run(1)
    (request,) = generator.request_texts()
    assert "Should I put my bonus in a pension to cut tax?" in request and "What is a pension?" in request


def test_policy_ids_are_made_valid() -> None:
    assert policy_id_from("Crypto Trading (advice)", None) == "crypto_trading_advice"
    assert policy_id_from("", "Workplace Safety") == "workplace_safety"
    assert policy_id_from(None, None) == ""
    assert len(policy_id_from("x" * 100, None)) == 64
