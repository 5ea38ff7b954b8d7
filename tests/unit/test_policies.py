"""The policy registry: the starter set, YAML validation, fingerprints and the check CLI."""

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from models.policies import DEFAULT_POLICY_DIR, PolicyDefinition, PolicyError, PolicySet, load_policies
from models.policies.check import main

STARTER_THRESHOLDS = {
    "unsafe_content": 0.511983,
    "prompt_injection": 0.450673,
    "hate_harassment": 0.5,
    "financial_advice": 0.5,
    "tax_advice": 0.5,
    "legal_advice": 0.5,
    "medical_advice": 0.5,
}

VALID = """\
id: demo
version: "1"
name: Demo policy
description: A policy used by the tests.
allowed: [talking about demos]
disallowed: [running real demos]
examples:
  safe: ["what is a demo?"]
  unsafe: [run the demo now]
threshold: 0.5
"""


def write(directory: Path, name: str, text: str) -> Path:
    """Write `text` (dedented) to directory/name and return the path."""
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def policy_yaml(**changes: object) -> str:
    """The VALID policy with top-level fields replaced (a value of None removes the field)."""
    lines = [line for line in VALID.splitlines() if line.split(":")[0] not in changes]
    lines += [f"{key}: {value}" for key, value in changes.items() if value is not None]
    # nested example lines belong to `examples`; drop them if examples was replaced
    if "examples" in changes:
        lines = [line for line in lines if not line.startswith("  ")]
    return "\n".join(lines) + "\n"


def load_error(tmp_path: Path, text: str, name: str = "bad.yaml") -> str:
    """Load `text` from a file and return the PolicyError message (which must name the file)."""
    path = write(tmp_path, name, text)
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def make_policy(**changes: object) -> PolicyDefinition:
    base = PolicyDefinition(
        id="p",
        version="1",
        name="P",
        description="Describes p.",
        allowed=("a",),
        disallowed=("d",),
        safe_examples=("s",),
        unsafe_examples=("u",),
        threshold=0.5,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The starter set


def test_starter_set_loads_with_expected_ids_and_thresholds() -> None:
    policies = load_policies(DEFAULT_POLICY_DIR)
    assert len(policies) == 7
    assert set(policies.ids) == set(STARTER_THRESHOLDS)
    assert {p.id: p.threshold for p in policies} == STARTER_THRESHOLDS
    assert all(p.enabled and p.version == "1" for p in policies)
    assert len(policies.enabled()) == 7
    assert all(Path(p.source).name == f"{p.id}.yaml" for p in policies)


@pytest.mark.parametrize("policy_id", sorted(STARTER_THRESHOLDS))
def test_starter_policies_are_complete(policy_id: str) -> None:
    policy = load_policies(DEFAULT_POLICY_DIR / f"{policy_id}.yaml").get(policy_id)
    assert policy is not None
    assert 4 <= len(policy.allowed) <= 8
    assert 4 <= len(policy.disallowed) <= 8
    assert 4 <= len(policy.safe_examples) <= 6
    assert 4 <= len(policy.unsafe_examples) <= 6
    assert 2 <= policy.description.count(". ") + 1 <= 6
    assert not set(policy.safe_examples) & set(policy.unsafe_examples)


def test_starter_files_start_with_a_comment() -> None:
    files = sorted(DEFAULT_POLICY_DIR.glob("*.yaml"))
    assert len(files) == 7
    assert all(f.read_text(encoding="utf-8").startswith("# ") for f in files)


# ---------------------------------------------------------------------------------------------
# Loading shapes


def test_single_file_policy(tmp_path: Path) -> None:
    policies = load_policies(write(tmp_path, "one.yaml", VALID))
    (policy,) = policies
    assert policy == PolicyDefinition(
        id="demo",
        version="1",
        name="Demo policy",
        description="A policy used by the tests.",
        allowed=("talking about demos",),
        disallowed=("running real demos",),
        safe_examples=("what is a demo?",),
        unsafe_examples=("run the demo now",),
        threshold=0.5,
        enabled=True,
        source=str(tmp_path / "one.yaml"),
    )


def test_policies_list_file_keeps_order(tmp_path: Path) -> None:
    text = """\
    policies:
      - {id: zeta, version: 2, name: Z, description: z., threshold: 0.3, enabled: false}
      - {id: alpha, version: "1.0", name: A, description: a., threshold: 0.7}
    """
    policies = load_policies(write(tmp_path, "many.yml", text))
    assert policies.ids == ("zeta", "alpha")
    zeta = policies.get("zeta")
    assert zeta is not None
    assert (zeta.version, zeta.enabled, zeta.allowed, zeta.safe_examples) == ("2", False, (), ())
    assert policies.enabled().ids == ("alpha",)


def test_directory_reads_yaml_and_yml_sorted_and_skips_other_files(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", policy_yaml(id="bee"))
    write(tmp_path, "a.yml", policy_yaml(id="ay"))
    write(tmp_path, "c.txt", "not: a policy")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "d.yaml", policy_yaml(id="nested"))
    assert load_policies(str(tmp_path)).ids == ("ay", "bee")


def test_strings_are_stripped_and_optional_nulls_mean_empty(tmp_path: Path) -> None:
    text = 'id: x\nversion: " 3 "\nname: "  N  "\ndescription: |\n  D.\nallowed:\nthreshold: 0.1\n'
    (policy,) = load_policies(write(tmp_path, "x.yaml", text))
    assert (policy.version, policy.name, policy.description, policy.allowed) == ("3", "N", "D.", ())


# ---------------------------------------------------------------------------------------------
# File-level errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file or directory") as info:
        load_policies(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bin.yaml", "")
    path.write_bytes(b"id: \xff\xfe\n")
    with pytest.raises(PolicyError, match=r"bin\.yaml: not valid UTF-8"):
        load_policies(path)


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    message = load_error(tmp_path, "id: x\nversion: 1\nname: [unclosed\ndescription: d\n")
    assert "invalid YAML at line " in message
    line = int(message.split("at line ")[1].split(",")[0])
    assert line in (3, 4)


def test_duplicate_key_in_yaml(tmp_path: Path) -> None:
    message = load_error(tmp_path, VALID + "threshold: 0.9\n")
    assert "invalid YAML at line 11, column 1: found duplicate key 'threshold'" in message


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = """\
    policies:
      - &base {id: first, version: 1, name: N, description: D, threshold: 0.5}
      - <<: *base
        id: second
        threshold: 0.7
    """
    policies = load_policies(write(tmp_path, "merge.yaml", text))
    assert [(p.id, p.threshold) for p in policies] == [("first", 0.5), ("second", 0.7)]


def test_empty_file(tmp_path: Path) -> None:
    assert load_error(tmp_path, "# only a comment\n").endswith("file is empty")


@pytest.mark.parametrize(("text", "found"), [("- a\n- b\n", "list"), ("just text\n", "string")])
def test_top_level_not_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    message = load_error(tmp_path, text)
    assert "top level must be a mapping" in message
    assert message.endswith(f"got {found}")


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"no policy files \(\*\.yaml, \*\.yml\) in directory"):
        load_policies(tmp_path)


def test_empty_policies_list(tmp_path: Path) -> None:
    assert load_error(tmp_path, "policies: []\n").endswith("'policies' list is empty")


def test_policies_list_with_extra_keys(tmp_path: Path) -> None:
    message = load_error(tmp_path, "policies: []\nversion: 1\n")
    assert "must hold nothing else, found version" in message


def test_policies_list_entry_not_a_mapping(tmp_path: Path) -> None:
    message = load_error(tmp_path, "policies:\n  - just a string\n")
    assert message.endswith("policy #1: must be a mapping, got string")


# ---------------------------------------------------------------------------------------------
# Field errors: each message names file, policy and field


def test_missing_required_field(tmp_path: Path) -> None:
    message = load_error(tmp_path, policy_yaml(threshold=None))
    assert message.endswith("policy 'demo': missing required field 'threshold'")


def test_missing_id_uses_index(tmp_path: Path) -> None:
    text = """\
    policies:
      - {id: ok, version: 1, name: N, description: D, threshold: 0.5}
      - {version: 1}
    """
    message = load_error(tmp_path, text)
    assert message.endswith("policy #2: missing required field 'id'")


def test_list_given_for_description(tmp_path: Path) -> None:
    message = load_error(tmp_path, policy_yaml(description="[a, b]"))
    assert message.endswith("policy 'demo': description must be a string, got list")


@pytest.mark.parametrize("value", ["true", "false"])
def test_bool_threshold_rejected(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, policy_yaml(threshold=value))
    assert f"policy 'demo': threshold must be a number, got bool {value.title()}" in message


@pytest.mark.parametrize("value", ["1.5", "0", "1", "-0.2", ".nan", ".inf"])
def test_threshold_out_of_range_or_not_finite(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, policy_yaml(threshold=value))
    assert "policy 'demo': threshold must be a number between 0 and 1 (exclusive), got " in message


def test_threshold_message_matches_documented_example(tmp_path: Path) -> None:
    message = load_error(tmp_path, policy_yaml(id="tax_advice", threshold="1.5"), name="tax_advice.yaml")
    assert message == (
        f"{tmp_path / 'tax_advice.yaml'}: policy 'tax_advice': "
        "threshold must be a number between 0 and 1 (exclusive), got 1.5"
    )


def test_threshold_as_string_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, policy_yaml(threshold='"0.5"'))
    assert message.endswith("threshold must be a number, got string '0.5'")


@pytest.mark.parametrize("bad_id", ["Tax", "_tax", "tax advice", "x" * 65, "-a"])
def test_id_pattern(tmp_path: Path, bad_id: str) -> None:
    message = load_error(tmp_path, policy_yaml(id=f'"{bad_id}"'))
    assert "id must be 1-64 characters" in message
    assert message.endswith(f"got {bad_id!r}")


def test_id_of_wrong_type(tmp_path: Path) -> None:
    message = load_error(tmp_path, policy_yaml(id="42"))
    assert message.endswith(
        "policy #1: id must be 1-64 characters: lowercase letters, digits, '_', '.', '-',"
        " starting with a letter or digit, got 42"
    )


def test_unknown_field_suggests_closest(tmp_path: Path) -> None:
    message = load_error(tmp_path, policy_yaml(disalowed="[x]"))
    assert "policy 'demo': unknown field 'disalowed' (did you mean 'disallowed'?)" in message
    assert "known fields: id, version, name, description, threshold, allowed, disallowed" in message


def test_unknown_field_without_close_match(tmp_path: Path) -> None:
    message = load_error(tmp_path, policy_yaml(colour="red"))
    assert "unknown field 'colour'; known fields:" in message
    assert "did you mean" not in message


def test_unknown_example_kind(tmp_path: Path) -> None:
    message = load_error(tmp_path, policy_yaml(examples="{safe: [a], unsaf: [b]}"))
    assert "unknown field 'examples.unsaf' (did you mean 'examples.unsafe'?)" in message


def test_duplicate_id_names_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", VALID)
    second = write(tmp_path, "b.yaml", VALID)
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    assert str(info.value) == f"{second}: policy 'demo': id 'demo' is already defined in {first}"


def test_duplicate_id_within_one_file(tmp_path: Path) -> None:
    entry = "  - {id: same, version: 1, name: N, description: D, threshold: 0.5}\n"
    message = load_error(tmp_path, "policies:\n" + entry + entry)
    assert message.endswith("policy 'same': id 'same' is already defined in " + str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("allowed", '[ok, ""]', "allowed[1] must not be an empty string"),
        ("disallowed", '["  "]', "disallowed[0] must not be an empty string"),
        ("allowed", "[1]", "allowed[0] must be a string, got integer"),
        ("allowed", "just one", "allowed must be a list of strings, got string"),
        ("examples", '{safe: [""]}', "examples.safe[0] must not be an empty string"),
        ("examples", "[a]", "examples must be a mapping with 'safe' and 'unsafe', got list"),
    ],
)
def test_list_field_errors(tmp_path: Path, field: str, value: str, expected: str) -> None:
    message = load_error(tmp_path, policy_yaml(**{field: value}))
    assert message.endswith(f"policy 'demo': {expected}")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", '""', "name must not be empty"),
        ("version", '""', "version must not be empty"),
        ("version", "1.0", "version must be a string or an integer, got number 1.0"),
        ("enabled", "yes please", "enabled must be true or false, got string 'yes please'"),
    ],
)
def test_scalar_field_errors(tmp_path: Path, field: str, value: str, expected: str) -> None:
    message = load_error(tmp_path, policy_yaml(**{field: value}))
    assert f"policy 'demo': {expected}" in message


def test_description_too_long(tmp_path: Path) -> None:
    message = load_error(tmp_path, policy_yaml(description="x" * 2001))
    assert message.endswith("policy 'demo': description must be at most 2000 characters, got 2001")
    assert load_policies(write(tmp_path, "ok.yaml", policy_yaml(description="x" * 2000)))


def test_kind_is_restrict_by_default_or_scope(tmp_path: Path) -> None:
    (default,) = load_policies(write(tmp_path, "a.yaml", VALID))
    (scope,) = load_policies(write(tmp_path, "b.yaml", policy_yaml(kind="scope")))
    assert (default.kind, default.is_scope) == ("restrict", False)
    assert (scope.kind, scope.is_scope) == ("scope", True)
    message = load_error(tmp_path, policy_yaml(kind="allowlist"))
    assert message.endswith("policy 'demo': kind must be one of restrict, scope, got 'allowlist'")


# ---------------------------------------------------------------------------------------------
# Fingerprints and PolicySet


@pytest.mark.parametrize(
    "change",
    [
        {"description": "Something else."},
        {"version": "2"},
        {"name": "Q"},
        {"allowed": ("a", "b")},
        {"disallowed": ()},
        {"safe_examples": ("s2",)},
        {"unsafe_examples": ("u", "u2")},
        {"kind": "scope"},
    ],
)
def test_fingerprint_changes_with_meaning(change: dict[str, object]) -> None:
    assert make_policy(**change).fingerprint != make_policy().fingerprint


def test_fingerprint_ignores_threshold_enabled_and_source() -> None:
    fingerprint = make_policy().fingerprint
    assert len(fingerprint) == 16
    assert int(fingerprint, 16) >= 0
    assert make_policy(threshold=0.9, enabled=False, source="elsewhere.yaml").fingerprint == fingerprint


def test_fingerprint_tells_safe_from_unsafe_examples() -> None:
    swapped = make_policy(safe_examples=("u",), unsafe_examples=("s",))
    assert swapped.fingerprint != make_policy().fingerprint


def test_fingerprint_stable_across_loads(tmp_path: Path) -> None:
    first = load_policies(write(tmp_path, "a.yaml", VALID))
    edited = load_policies(write(tmp_path, "b.yaml", VALID.replace("threshold: 0.5", "threshold: 0.8")))
    assert first.fingerprint == edited.fingerprint
    changed = load_policies(write(tmp_path, "c.yaml", VALID.replace("run the demo", "start the demo")))
    assert changed.fingerprint != first.fingerprint


def test_policy_set_fingerprint_depends_on_order_and_ids() -> None:
    a, b, c = make_policy(id="a"), make_policy(id="b"), make_policy(id="c")
    base = PolicySet((a, b)).fingerprint
    assert PolicySet((b, a)).fingerprint != base
    assert PolicySet((a, c)).fingerprint != base
    assert PolicySet((a,)).fingerprint != base
    assert PolicySet((a, dataclasses.replace(b, threshold=0.9))).fingerprint == base


def test_policy_set_access_and_enabled_filter() -> None:
    on, off = make_policy(id="on"), make_policy(id="off", enabled=False)
    policies = PolicySet((off, on))
    assert policies.ids == ("off", "on")
    assert list(policies) == [off, on]
    assert len(policies) == 2
    assert policies.get("on") is on
    assert policies.get("missing") is None
    assert "off" in policies
    assert "missing" not in policies
    enabled = policies.enabled()
    assert isinstance(enabled, PolicySet)
    assert enabled.ids == ("on",)
    assert len(PolicySet(()).enabled()) == 0


def test_policy_set_rejects_duplicates_and_is_immutable() -> None:
    policy = make_policy(source="x.yaml")
    with pytest.raises(PolicyError, match=r"x\.yaml: policy 'p': id 'p' is already defined in x\.yaml"):
        PolicySet((policy, policy))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.threshold = 0.1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# The check CLI


def test_check_prints_table_for_starter_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["id", "version", "kind", "threshold", "enabled", "name", "fingerprint"]
    rows = {line.split()[0]: line for line in lines[1:8]}
    assert set(rows) == set(STARTER_THRESHOLDS)
    assert "0.511983" in rows["unsafe_content"]
    assert load_policies(DEFAULT_POLICY_DIR).get("tax_advice").fingerprint in rows["tax_advice"]  # type: ignore[union-attr]
    assert lines[8].startswith("7 policies, 7 enabled; set fingerprint ")


def test_check_reports_error_and_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.yaml", policy_yaml(threshold="1.5"))
    assert main([str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err
        == f"error: {path}: policy 'demo': threshold must be a number between 0 and 1 (exclusive), got 1.5\n"
    )


def test_check_single_file_shows_disabled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "off.yaml", policy_yaml(enabled="false"))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:5] == ["demo", "1", "restrict", "0.5", "no"]
    assert "1 policies, 0 enabled" in out


def test_check_runs_as_module_with_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "models.policies.check", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0
    assert "validate guard policies" in result.stdout.lower()
    assert "directory" in result.stdout
