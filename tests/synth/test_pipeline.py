"""The synth pipeline with a scripted generator: reflection, failures, resume, output and summary."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from models.policies import PolicyDefinition
from models.synth.assemble import AssembleSettings
from models.synth.generators import EndpointUnreachable, GeneratorRequestError, Message
from models.synth.pipeline import SynthConfig, summary_path_for, synthesize
from models.synth.requests import plan_requests
from models.synth.runner import RequestSettings
from models.synth.summary import Prices
from models.synth.workdir import GENERATED_FILE, REFLECTED_FILE, work_dir_for
from models.train.guardformer_data import add_handwritten
from tests.synth.fakes import (
    ScriptedGenerator,
    generated_answer,
    intended_label,
    is_reflection,
    reviewed_text,
)


def config(per_label: int = 3, **changes: Any) -> SynthConfig:
    """A quiet config; `reflect`, `on_disagree`, `balance`, `concurrency` and prices can be changed."""
    reflect = changes.pop("reflect", True)
    requests = RequestSettings(
        reflect=reflect,
        concurrency=changes.pop("concurrency", 1),
        show_progress=False,
        seed=changes.pop("seed", 0),
    )
    assembly = AssembleSettings(
        reflect=reflect,
        on_disagree=changes.pop("on_disagree", "drop"),
        balance=changes.pop("balance", True),
        validation_share=changes.pop("validation_share", 0.15),
    )
    return SynthConfig(per_label=per_label, requests=requests, assembly=assembly, **changes)


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_rows_have_the_training_format(tmp_path: Path, small_policy: PolicyDefinition) -> None:
    out = tmp_path / "rows.jsonl"
    generator = ScriptedGenerator()
    summary = await synthesize([small_policy], generator, out, config(per_label=4))
    rows = read_rows(out)
    assert len(rows) == 8
    for row in rows:
        assert list(row)[:4] == ["text", "policy", "label", "split"]
        assert set(row) == {
            "text",
            "policy",
            "label",
            "split",
            "rationale",
            "reflection",
            "generator",
            "source",
        }
        assert row["policy"] == "pets" and row["source"] == "synthetic" and row["generator"] == "fake"
        assert row["label"] == (1 if row["text"].startswith("Bad") else 0)
        assert row["split"] in ("train", "validation")
        assert row["reflection"]["status"] == "agreed"
    assert Counter(row["label"] for row in rows) == {1: 4, 0: 4}
    assert json.loads(summary_path_for(out).read_text()) == summary
    # generation + reflection for each of the 8 requests
    assert len(generator.requests) == 16
    # the training tools read the file
    prompts: dict[str, Any] = {}
    add_handwritten(prompts, out)
    violating = [prompt for prompt in prompts.values() if "pets" in prompt.policies]
    assert len(violating) == 4 and sum(prompt.benign for prompt in prompts.values()) == 4


async def test_summary_counts_add_up(tmp_path: Path, small_policy: PolicyDefinition) -> None:
    def sometimes_broken(messages: list[Message]) -> str:
        content = messages[-1]["content"]
        if "disallowed behaviour: Replacing a vet visit" in content:
            return "I'm sorry, but I can't help with that."
        if "allowed behaviour: Where to find a veterinarian" in content:
            return '{"prompt": "How often should a cat see a vet?", "rationale": "copied"}'
        return generated_answer(messages)

    out = tmp_path / "rows.jsonl"
    prices = Prices(input_per_1k=0.5, output_per_1k=1.5)
    summary = await synthesize(
        [small_policy], ScriptedGenerator(generate=sometimes_broken), out, config(per_label=4, prices=prices)
    )
    requests = summary["requests"]
    assert requests["generation"] == 8
    assert requests["ok"] + requests["failed"] == requests["generation"]
    assert summary["failures"] == {"copied_example": 2, "refusal": 2}
    assert requests["sent_this_run"] == {"generation": 8, "reflection": 4}
    assert summary["reflection"]["agreed"] == 4
    assert summary["rows"]["per_policy"] == {"pets": {"violates": 2, "complies": 2}}
    assert summary["tokens"]["prompt"] == 12 * 100 and summary["tokens"]["completion"] == 12 * 20
    assert summary["cost_estimate"]["this_run"] == pytest.approx(1.2 * 0.5 + 0.24 * 1.5)
    work = work_dir_for(out)
    failed = [json.loads(line) for line in (work / GENERATED_FILE).read_text().splitlines()]
    assert Counter(record["status"] for record in failed) == {"ok": 4, "failed": 4}


def judge_everything_as_violating(messages: list[Message]) -> str:
    return '{"label": "violates", "rationale": "the reviewer disagrees"}'


async def test_reflection_disagreement_drops_by_default(
    tmp_path: Path, small_policy: PolicyDefinition
) -> None:
    out = tmp_path / "rows.jsonl"
    generator = ScriptedGenerator(reflect=judge_everything_as_violating)
    summary = await synthesize([small_policy], generator, out, config(per_label=3, balance=False))
    rows = read_rows(out)
    assert [row["label"] for row in rows] == [1, 1, 1]
    assert summary["reflection"] | {"unparsed_reasons": {}} == {
        "agreed": 3,
        "disagreed": 3,
        "unparsed": 0,
        "relabelled": 0,
        "dropped": 3,
        "unparsed_reasons": {},
    }


async def test_reflection_disagreement_relabels(tmp_path: Path, small_policy: PolicyDefinition) -> None:
    out = tmp_path / "rows.jsonl"
    generator = ScriptedGenerator(reflect=judge_everything_as_violating)
    summary = await synthesize(
        [small_policy], generator, out, config(per_label=3, balance=False, on_disagree="relabel")
    )
    rows = read_rows(out)
    assert len(rows) == 6 and all(row["label"] == 1 for row in rows)
    relabelled = [row for row in rows if row["text"].startswith("Fine")]
    assert len(relabelled) == 3
    for row in relabelled:
        assert row["reflection"] == {
            "status": "disagreed",
            "label": "violates",
            "rationale": "the reviewer disagrees",
            "intended": "complies",
            "action": "relabelled",
        }
        assert row["rationale"] == "the reviewer disagrees"
    assert summary["reflection"]["relabelled"] == 3 and summary["reflection"]["dropped"] == 0


async def test_an_unparsed_reflection_keeps_the_intended_label(
    tmp_path: Path, small_policy: PolicyDefinition
) -> None:
    def mumble(messages: list[Message]) -> str:
        return "Hmm, hard to tell." if reviewed_text(messages).startswith("Fine") else '{"label": "violates"}'

    out = tmp_path / "rows.jsonl"
    summary = await synthesize([small_policy], ScriptedGenerator(reflect=mumble), out, config(per_label=2))
    rows = read_rows(out)
    assert Counter(row["label"] for row in rows) == {1: 2, 0: 2}
    unparsed = [row["reflection"] for row in rows if row["label"] == 0]
    assert unparsed == [{"status": "unparsed", "reason": "no_json"}] * 2
    assert summary["reflection"]["unparsed"] == 2 and summary["reflection"]["unparsed_reasons"] == {
        "no_json": 2
    }


async def test_without_reflection(tmp_path: Path, small_policy: PolicyDefinition) -> None:
    out = tmp_path / "rows.jsonl"
    generator = ScriptedGenerator(reflect=judge_everything_as_violating)
    summary = await synthesize([small_policy], generator, out, config(per_label=2, reflect=False))
    assert not any(is_reflection(messages) for messages in generator.requests)
    assert {row["reflection"]["status"] for row in read_rows(out)} == {"skipped"}
    assert summary["reflection"] == {"skipped": True}


async def test_duplicates_are_removed_and_counted(tmp_path: Path, small_policy: PolicyDefinition) -> None:
    def repetitive(messages: list[Message]) -> str:
        if intended_label(messages) == 0:
            return '{"prompt": "Where can I find a good vet near me?", "rationale": "r"}'
        return generated_answer(messages)

    out = tmp_path / "rows.jsonl"
    summary = await synthesize(
        [small_policy], ScriptedGenerator(generate=repetitive), out, config(per_label=3)
    )
    assert summary["duplicates"] == {"exact": 2, "near": 0}
    assert summary["balance_removed"] == 2
    assert Counter(row["label"] for row in read_rows(out)) == {1: 1, 0: 1}


async def test_resume_after_interruption_requests_nothing_twice(
    tmp_path: Path, small_policy: PolicyDefinition
) -> None:
    uninterrupted = tmp_path / "reference.jsonl"
    await synthesize([small_policy], ScriptedGenerator(), uninterrupted, config(per_label=3))

    out = tmp_path / "rows.jsonl"
    first = ScriptedGenerator(fail_after=5)  # dies during the 6th request: a reflection is missing
    with pytest.raises(EndpointUnreachable):
        await synthesize([small_policy], first, out, config(per_label=3))
    assert not out.exists() and not summary_path_for(out).exists()
    work = work_dir_for(out)
    assert len((work / GENERATED_FILE).read_text().splitlines()) == 3
    assert len((work / REFLECTED_FILE).read_text().splitlines()) == 2

    second = ScriptedGenerator()
    summary = await synthesize([small_policy], second, out, config(per_label=3))
    first_requests, second_requests = first.request_texts(), second.request_texts()
    assert not set(first_requests) & set(second_requests)
    assert len(first_requests) + len(second_requests) == 12
    assert read_rows(out) == read_rows(uninterrupted)
    assert summary["requests"]["resumed"] == 2  # two requests had both their generation and reflection
    assert summary["requests"]["sent_this_run"] == {"generation": 3, "reflection": 4}

    third = ScriptedGenerator()
    again = await synthesize([small_policy], third, out, config(per_label=3))
    assert third.requests == [] and again["requests"]["resumed"] == 6
    assert read_rows(out) == read_rows(uninterrupted)


async def test_a_cut_off_work_line_is_ignored(tmp_path: Path, small_policy: PolicyDefinition) -> None:
    out = tmp_path / "rows.jsonl"
    with pytest.raises(EndpointUnreachable):
        await synthesize(
            [small_policy], ScriptedGenerator(fail_after=2), out, config(per_label=2, reflect=False)
        )
    generated = work_dir_for(out) / GENERATED_FILE
    with generated.open("a") as stream:
        stream.write('{"key": "pets:cut off mid-wri')  # a crash in the middle of a line
    second = ScriptedGenerator()
    summary = await synthesize([small_policy], second, out, config(per_label=2, reflect=False))
    assert len(second.requests) == 2
    assert summary["requests"]["ok"] == 4
    lines = generated.read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["status"] == "ok"


async def test_generator_errors_are_counted_and_retried_next_run(
    tmp_path: Path, small_policy: PolicyDefinition
) -> None:
    out = tmp_path / "rows.jsonl"
    flaky = ScriptedGenerator(fail_after=3, fail_with=GeneratorRequestError)
    summary = await synthesize([small_policy], flaky, out, config(per_label=2, reflect=False, balance=False))
    assert summary["failures"] == {"generator_error": 1}
    assert summary["requests"]["ok"] == 3 and summary["requests"]["failed"] == 1
    retry = ScriptedGenerator()
    summary = await synthesize([small_policy], retry, out, config(per_label=2, reflect=False, balance=False))
    assert len(retry.requests) == 1 and summary["failures"] == {}


async def test_larger_per_label_adds_only_new_requests(
    tmp_path: Path, small_policy: PolicyDefinition
) -> None:
    out = tmp_path / "rows.jsonl"
    await synthesize([small_policy], ScriptedGenerator(), out, config(per_label=2, reflect=False))
    more = ScriptedGenerator()
    summary = await synthesize([small_policy], more, out, config(per_label=3, reflect=False))
    assert len(more.requests) == 2 and summary["rows"]["total"] == 6


async def test_concurrency_limits_requests_in_flight(tmp_path: Path, small_policy: PolicyDefinition) -> None:
    generator = ScriptedGenerator(delay_s=0.02)
    await synthesize([small_policy], generator, tmp_path / "rows.jsonl", config(per_label=6, concurrency=3))
    assert generator.most_in_flight == 3
    serial = ScriptedGenerator(delay_s=0.005)
    await synthesize([small_policy], serial, tmp_path / "serial.jsonl", config(per_label=2, concurrency=1))
    assert serial.most_in_flight == 1


async def test_rate_limit_spaces_calls(tmp_path: Path, small_policy: PolicyDefinition) -> None:
    generator = ScriptedGenerator()
    summary = await synthesize(
        [small_policy],
        generator,
        tmp_path / "rows.jsonl",
        config(per_label=1, reflect=False, requests_per_minute=1200),
    )
    assert summary["wall_seconds"] >= 0.05 - 0.01  # two calls, 0.05 s apart at 20 per second


def test_plan_keys_are_unique_interleaved_and_fingerprinted(
    small_policy: PolicyDefinition, tax_policy: PolicyDefinition
) -> None:
    plan = plan_requests([small_policy, tax_policy], 3)
    assert len({request.key for request in plan}) == 12
    assert [(request.policy.id, request.label) for request in plan[:4]] == [
        ("pets", 1),
        ("pets", 0),
        ("tax_advice", 1),
        ("tax_advice", 0),
    ]
    assert plan[0].key == f"pets:{small_policy.fingerprint}:1:0"
    assert plan[0].seed(0) != plan[0].seed(1) and plan[0].seed(0) == plan_requests([small_policy], 1)[0].seed(
        0
    )
