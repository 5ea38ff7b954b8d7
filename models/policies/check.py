"""Validate policy YAML files and print a summary table.

    python -m models.policies.check                     # the starter set
    python -m models.policies.check path/to/policies/   # a directory of *.yaml / *.yml
    python -m models.policies.check my_policy.yaml      # one file

Exit status: 0 when every policy is valid, 2 on the first invalid one (the message goes to stderr).
"""

from __future__ import annotations

import argparse
import sys

from models.policies.registry import DEFAULT_POLICY_DIR, PolicyError, PolicySet, load_policies

_COLUMNS = ("id", "version", "kind", "threshold", "enabled", "name", "fingerprint")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m models.policies.check",
        description="Load and validate guard policies written in YAML, then print one row per policy.",
        epilog="Exit status: 0 if all policies are valid, 2 if a file or policy is invalid.",
    )
    parser.add_argument(
        "path",
        nargs="?",
        default=str(DEFAULT_POLICY_DIR),
        help="a policy YAML file, or a directory whose *.yaml/*.yml files are read in name order"
        " (default: the starter set, %(default)s)",
    )
    return parser


def format_table(policies: PolicySet) -> str:
    """The policies as an aligned text table, followed by a one-line summary."""
    rows = [_COLUMNS] + [
        (p.id, p.version, p.kind, str(p.threshold), "yes" if p.enabled else "no", p.name, p.fingerprint)
        for p in policies
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    enabled = len(policies.enabled())
    lines.append(f"{len(policies)} policies, {enabled} enabled; set fingerprint {policies.fingerprint}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Validate the policies at the given path; print the table (0) or the error (2)."""
    args = _parser().parse_args(argv)
    try:
        policies = load_policies(args.path)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(policies))
    return 0


if __name__ == "__main__":
    sys.exit(main())
