"""Shared fixtures of the synth tests: policies and a small one written to a temporary file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from models.policies import DEFAULT_POLICY_DIR, PolicyDefinition, load_policies

TAX_POLICY_FILE = DEFAULT_POLICY_DIR / "tax_advice.yaml"

SMALL_POLICY = """\
id: pets
version: "1"
name: No veterinary dosing
description: Flags requests for medication doses for a specific animal.
allowed:
  - General facts about pet care
  - Where to find a veterinarian
disallowed:
  - Dosing a named medication for the asker's animal
  - Replacing a vet visit with home treatment
examples:
  safe: ["How often should a cat see a vet?"]
  unsafe: ["How many mg of ibuprofen can I give my 10 kg dog?"]
threshold: 0.5
"""


@pytest.fixture(scope="session")
def tax_policy() -> PolicyDefinition:
    policy = load_policies(TAX_POLICY_FILE).get("tax_advice")
    assert policy is not None
    return policy


@pytest.fixture
def small_policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "pets.yaml"
    path.write_text(textwrap.dedent(SMALL_POLICY), encoding="utf-8")
    return path


@pytest.fixture
def small_policy(small_policy_file: Path) -> PolicyDefinition:
    return load_policies(small_policy_file).policies[0]
