"""Calibration shifts: the best threshold lands on the policy's, order kept, reworded policies raw."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models.base import bert_onnx
from models.base.contract import Policy
from models.calibrate import chosen_threshold
from models.guardformer.calibration import (
    THRESHOLD_RANGE,
    UNSEEN,
    apply_shifts,
    calibration_entries,
    shifts_for,
    unseen_entry,
)
from models.guardformer.guard import GuardFormerGuard
from models.policies import DEFAULT_POLICY_DIR, PolicySet, load_policies
from models.train.guardformer_model import GuardFormerModel
from models.train.torch_encoder import SentenceEncoder
from models.train.train_guardformer import TrainSettings, save_model
from tests.tiny_models import tiny_bert_config
from worker.cache import cache_key


@pytest.fixture(scope="module")
def starter() -> PolicySet:
    return load_policies(DEFAULT_POLICY_DIR)


@pytest.fixture(scope="module")
def tiny_guardformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = GuardFormerModel(SentenceEncoder.from_config(tiny_bert_config(128)), head_hidden=16).eval()
    out = tmp_path_factory.mktemp("tiny-guardformer")
    settings = TrainSettings(max_length=128, max_policy_tokens=48)
    save_model(out, model, bert_onnx.encoder_dir(), settings, [], "tiny-guardformer", "0.0.1")
    return out


def infos(policies: PolicySet) -> list[Policy]:
    return [Policy(p.id, p.version, p.threshold, p.fingerprint) for p in policies]


def test_the_best_threshold_lands_on_the_policy_threshold(starter: PolicySet) -> None:
    legal, tax = starter.get("legal_advice"), starter.get("tax_advice")
    assert legal is not None and tax is not None
    entries = calibration_entries([legal, tax], {"legal_advice": 0.12})
    assert set(entries) == {"legal_advice"}  # tax has no measured threshold
    shifts = shifts_for(infos(PolicySet((legal, tax))), entries)
    moved = apply_shifts(np.array([[0.12, 0.12], [0.05, 0.3], [0.6, np.nan]], dtype=np.float32), shifts)
    assert moved[0, 0] == pytest.approx(legal.threshold, abs=1e-5)
    assert moved[1, 0] < moved[0, 0] < moved[2, 0]  # order kept
    np.testing.assert_allclose(moved[:2, 1], [0.12, 0.3])  # uncalibrated column untouched
    assert np.isnan(moved[2, 1])


def test_extreme_thresholds_are_clipped(starter: PolicySet) -> None:
    legal = starter.get("legal_advice")
    assert legal is not None
    entry = calibration_entries([legal], {"legal_advice": 1e-6})["legal_advice"]
    assert entry["best_threshold"] == THRESHOLD_RANGE[0]


def test_a_reworded_policy_is_scored_raw(starter: PolicySet) -> None:
    legal = starter.get("legal_advice")
    assert legal is not None
    entries = calibration_entries([legal], {"legal_advice": 0.2})
    reworded = dataclasses.replace(legal, description=legal.description + " Also wills.")
    assert reworded.fingerprint != legal.fingerprint
    assert shifts_for(infos(PolicySet((reworded,))), entries).tolist() == [0.0]
    assert shifts_for(infos(PolicySet((legal,))), entries).tolist() != [0.0]


def test_policies_without_an_entry_of_their_own_take_the_unseen_shift(starter: PolicySet) -> None:
    legal, tax = starter.get("legal_advice"), starter.get("tax_advice")
    assert legal is not None and tax is not None
    entries = {
        **calibration_entries([legal], {"legal_advice": 0.2}),
        UNSEEN: unseen_entry(1.5, ["x"], {"mean_f1_raw": 0.5}),
    }
    reworded = dataclasses.replace(legal, description=legal.description + " Also wills.")
    own = entries["legal_advice"]["shift"]
    np.testing.assert_allclose(shifts_for(infos(PolicySet((legal, tax))), entries), [own, 1.5], rtol=1e-6)
    assert shifts_for(infos(PolicySet((reworded,))), entries).tolist() == [1.5]


def test_a_per_policy_calibration_keeps_the_unseen_shift(tiny_guardformer_dir: Path, tmp_path: Path) -> None:
    from models.guardformer.config import GuardFormerConfig
    from models.train.guardformer_io import write_calibration

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_guardformer_dir, model_dir)
    write_calibration(model_dir, {UNSEEN: unseen_entry(-0.75, ["custom.a"], {"mean_f1_raw": 0.4})})
    write_calibration(model_dir, {"tax_advice": {"fingerprint": "f", "best_threshold": 0.3, "shift": 0.8}})
    calibration = GuardFormerConfig.load(model_dir / "config.json").calibration
    assert set(calibration) == {UNSEEN, "tax_advice"} and calibration[UNSEEN]["shift"] == -0.75


def test_the_served_guard_applies_its_calibration(
    tiny_guardformer_dir: Path, starter: PolicySet, tmp_path: Path
) -> None:
    calibrated = tmp_path / "calibrated"
    shutil.copytree(tiny_guardformer_dir, calibrated)
    config = json.loads((calibrated / "config.json").read_text())
    config["calibration"] = calibration_entries(starter, {"tax_advice": 0.3, "legal_advice": 0.7})
    (calibrated / "config.json").write_text(json.dumps(config))
    cache = tmp_path / "cache"
    raw = GuardFormerGuard.load(tiny_guardformer_dir, starter, device="cpu", cache_dir=cache)
    guard = GuardFormerGuard.load(calibrated, starter, device="cpu", cache_dir=cache)
    texts = ["How should I file my taxes?", "Can I sue my landlord?"]
    expected = apply_shifts(raw.score(raw.encode(texts)), guard.shifts)
    np.testing.assert_allclose(guard.score(guard.encode(texts)), expected, atol=1e-6)
    assert np.count_nonzero(guard.shifts) == 2
    # Same name and version, other scores: a calibration written in place never meets the
    # scores cached before it.
    assert (guard.info.name, guard.info.version) == (raw.info.name, raw.info.version)
    assert cache_key("gs:", guard.info, texts[0]) != cache_key("gs:", raw.info, texts[0])


def test_a_false_positive_bound_picks_a_stricter_threshold() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.4, 0.3, 0.35, 0.2, 0.1, 0.05])
    assert chosen_threshold(y, scores, None) == pytest.approx(0.3)  # F1 0.857, one false positive
    assert chosen_threshold(y, scores, 0.0) == pytest.approx(0.4)  # no false positive allowed


def test_the_unseen_shift_search_finds_where_the_policies_are_cut_best() -> None:
    from models.calibrate import UNSEEN_SHIFTS, mean_f1_by_shift

    y = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([0.3, 0.35, 0.1, 0.05, 0.4, 0.12])  # every positive below 0.5, above every negative
    groups = [np.array([0, 1, 2, 3]), np.array([4, 5])]
    by_shift = mean_f1_by_shift(y, scores, groups, [0.5, 0.5])
    assert by_shift[list(UNSEEN_SHIFTS).index(0.0)] == 0.0
    best = UNSEEN_SHIFTS[int(np.argmax(by_shift))]
    assert best > 0 and by_shift.max() == 1.0


def test_the_unseen_shift_keeps_false_alarms_on_benign_text_within_the_bound() -> None:
    from models.calibrate import UNSEEN_SHIFTS, mean_flagged_by_shift, pick_shift

    benign = [np.array([0.45, 0.55, 0.6, 0.2]), np.array([0.7, 0.1, 0.1, 0.1])]
    flagged = mean_flagged_by_shift(benign, [0.5, 0.5])
    zero = list(UNSEEN_SHIFTS).index(0.0)
    assert flagged[zero] == (0.5 + 0.25) / 2
    assert np.all(np.diff(flagged) >= 0)  # a higher shift never flags less
    f1 = np.linspace(0.2, 0.9, len(UNSEEN_SHIFTS))  # recall grows with the shift here
    chosen = pick_shift(f1, flagged, max_benign_fpr=0.25)
    assert flagged[chosen] <= 0.25 and all(flagged[k] > 0.25 for k in range(chosen + 1, len(f1)))
    assert pick_shift(f1, flagged, max_benign_fpr=-1.0) == int(np.argmin(flagged))
