"""`guardstream train --model guardformer --train-rows` then `guardstream eval`, on a tiny encoder.

The path a user takes from `guardstream synth` output: rows of one policy in, a PolicyGuard
directory out, measured on the rows' validation split, without the shared datasets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.base import bert_onnx
from models.train.torch_encoder import SentenceEncoder
from tests.tiny_models import tiny_bert_config
from worker.cli import main

VIOLATIONS = [
    "I earned 80,000 freelancing; what can I deduct to pay less tax?",
    "Should my wife and I file jointly or separately with our incomes?",
    "How do I structure my consulting company to minimise my taxes?",
    "I sold shares in March; how do I avoid the capital gains tax?",
    "Which expenses can I claim on my own tax return this year?",
    "How can I pay less inheritance tax on my father's house?",
    "Tell me how to report my crypto gains so I owe the least.",
    "What is the best way to lower my property tax bill?",
]
COMPLIANT = [
    "What is the difference between a tax deduction and a tax credit?",
    "How do progressive tax brackets work in principle?",
    "Where can I download the official income tax return form?",
    "What is VAT and who pays it?",
    "Why was the federal income tax introduced in 1913?",
    "What does a tax accountant do?",
    "Define taxable income.",
    "When is the usual filing deadline for income tax?",
]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-encoder")
    SentenceEncoder.from_config(tiny_bert_config(128)).save(out, bert_onnx.encoder_dir())
    return out


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    for label, texts in ((1, VIOLATIONS), (0, COMPLIANT)):
        for index, text in enumerate(texts):
            split = "validation" if index % 4 == 3 else "train"
            rows.append({"text": text, "policy": "tax_advice", "label": label, "split": split})
    path = tmp_path_factory.mktemp("rows") / "synthetic.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def train_args(encoder: Path, rows: Path, out: Path) -> list[str]:
    return [
        "train", "--model", "guardformer", "--train-rows", str(rows), "--only-policy", "tax_advice",
        "--encoder-dir", str(encoder), "--out", str(out), "--epochs", "2", "--batch-size", "8",
        "--max-length", "128", "--max-policy-tokens", "48", "--negatives-per-positive", "1", "--calibrate",
    ]  # fmt: skip


def test_policyguard_trains_on_rows_alone_and_evaluates(
    tiny_encoder: Path, rows_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "policyguard"
    assert main(train_args(tiny_encoder, rows_file, out)) == 0
    config = json.loads((out / "config.json").read_text())
    assert [p["id"] for p in config["trained_policies"]] == ["tax_advice"]
    calibration = config["calibration"]["tax_advice"]  # from the validation rows' best threshold
    assert calibration["fingerprint"] == config["trained_policies"][0]["fingerprint"]
    train_record = json.loads((out / "train.json").read_text())
    assert train_record["pairs"] == {"tax_advice": [6, 6]}  # the rows' train split, nothing else
    validation = json.loads((out / "metrics.json").read_text())["validation"]["tax_advice"]
    assert validation["n_positive"] + validation["n_negative"] == 4

    report = tmp_path / "eval.json"
    command = ["eval", str(out), "--data", str(rows_file), "--policies", "tax_advice"]
    assert main([*command, "--split", "validation", "--json", str(report), "--latency-samples", "2"]) == 0
    result = json.loads(report.read_text())[0]
    assert result["prompts"] == 4
    assert set(result["policies"]) == {"tax_advice"}
    assert 0.0 <= result["policies"]["tax_advice"]["auprc"] <= 1.0


def test_train_needs_data_and_positives(
    tiny_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = train_args(tiny_encoder, tmp_path / "none.jsonl", tmp_path / "out")
    assert main([a for a in args if a not in ("--train-rows", str(tmp_path / "none.jsonl"))]) == 2
    assert "give --data-dir, --train-rows or both" in capsys.readouterr().err
    assert main(args) == 2
    assert "no rows file at" in capsys.readouterr().err
    only_compliant = tmp_path / "compliant.jsonl"
    only_compliant.write_text(
        "".join(
            json.dumps({"text": t, "policy": "tax_advice", "label": 0, "split": "train"}) + "\n"
            for t in COMPLIANT
        ),
        encoding="utf-8",
    )
    assert main(train_args(tiny_encoder, only_compliant, tmp_path / "out")) == 2
    assert "no training positives for tax_advice" in capsys.readouterr().err


def test_a_scope_policy_of_another_file_is_refused_in_one_line(
    tiny_encoder: Path, rows_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "shop.yaml"
    policy.write_text(
        "id: shop_only\nversion: 1\nkind: scope\nname: Shop\ndescription: Questions about our shop.\n"
        "threshold: 0.5\n",
        encoding="utf-8",
    )
    args = train_args(tiny_encoder, rows_file, tmp_path / "out")
    assert main([*args, "--policies", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "shop_only" in err and "cannot be trained yet" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
