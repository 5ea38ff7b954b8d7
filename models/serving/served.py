"""The model a worker serves: the model directory alone, or routed over the policy registry.

Without a registry and without a GuardFormer, the model scores its own policies. Otherwise every
enabled policy of the registry (the starter set by default) is scored by the model at
`model_path` when it knows it, else by the GuardFormer. Every problem with the directories or
the registry is one `ModelSetupError` whose message says what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.base.contract import GuardModel
from models.base.directory import ModelDirectoryError
from models.base.session import Device
from models.guardformer.guard import GuardFormerGuard
from models.policies import DEFAULT_POLICY_DIR, PolicyError, PolicySet, load_policies
from models.serving.loader import load_model
from models.serving.routing import PolicyRoutingError, route_policies


class ModelSetupError(Exception):
    """The model, the GuardFormer or the policy registry cannot be used: the message says why."""


@dataclass(frozen=True)
class ServingOptions:
    """Where the models and the registry are, and how to run them."""

    model_path: Path
    guardformer_path: Path | None = None
    policies_path: Path | None = None
    device: Device = "auto"
    cache_dir: Path | None = None
    intra_op_threads: int = 0
    precision: str = "auto"


def load_served_model(options: ServingOptions) -> GuardModel:
    """The one model the worker scores with; `ModelSetupError` when it cannot be put together."""
    try:
        registry = load_policies(options.policies_path) if options.policies_path is not None else None
        base = _load(options, options.model_path, registry)
        if isinstance(base, GuardFormerGuard):  # it reads the registry's policies itself
            return base
        if registry is None and options.guardformer_path is None:
            return base
        registry = registry if registry is not None else load_policies(DEFAULT_POLICY_DIR)
        if set(base.info.policy_ids) >= set(registry.enabled().ids):
            return route_policies(base, registry)
        known = set(base.info.policy_ids)
        rest = PolicySet(tuple(p for p in registry.enabled() if p.id not in known))
        guardformer = None
        if options.guardformer_path is not None:
            guardformer = _load(options, options.guardformer_path, rest)
        return route_policies(base, registry, guardformer)
    except (ModelDirectoryError, PolicyError, PolicyRoutingError) as exc:
        raise ModelSetupError(str(exc)) from exc


def _load(options: ServingOptions, path: Path, policies: PolicySet | None) -> GuardModel:
    return load_model(
        path,
        device=options.device,
        cache_dir=options.cache_dir,
        intra_op_threads=options.intra_op_threads,
        precision=options.precision,
        policies=policies,
    )
