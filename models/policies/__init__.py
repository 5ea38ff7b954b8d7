"""The policy registry: guard policies kept as YAML data, loaded and validated.

>>> from models.policies import DEFAULT_POLICY_DIR, load_policies
>>> policies = load_policies(DEFAULT_POLICY_DIR)
>>> policies.get("tax_advice").threshold
0.5

`python -m models.policies.check [PATH]` validates a file or directory and prints a summary.
"""

from models.policies.registry import (
    DEFAULT_POLICY_DIR,
    PolicyDefinition,
    PolicyError,
    PolicySet,
    load_policies,
)

__all__ = ["DEFAULT_POLICY_DIR", "PolicyDefinition", "PolicyError", "PolicySet", "load_policies"]
