"""The model a worker serves: the model directory alone, or routed over the policy registry.

Without a registry and without a GuardFormer, the model scores its own policies. Otherwise every
enabled policy of the registry (the starter set by default) is scored by the model at
`model_path` when it knows it, else by the GuardFormer: the one at `guardformer_path`, or the
packaged one (`DEFAULT_GUARDFORMER_DIR`) when none is given. Every problem with the directories
or the registry is one `ModelSetupError` whose message says what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.base.contract import GuardModel
from models.base.directory import CONFIG_FILE, DEFAULT_GUARDFORMER_DIR, ModelDirectoryError
from models.base.session import Device
from models.guardformer.guard import GuardFormerGuard
from models.policies import DEFAULT_POLICY_DIR, PolicyError, PolicySet, load_policies
from models.serving.loader import load_model
from models.serving.routing import PolicyRoutingError, route_policies, split_by_model


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
    return ServedModelBuilder(options).reload()


class ServedModelBuilder:
    """Puts the served model together for a registry, keeping the models it loaded for the next one.

    A registry edited in place only changes the policies: the model directories are read once,
    and a GuardFormer is rebuilt over the new policies on its loaded session (`with_policies`).
    """

    def __init__(self, options: ServingOptions) -> None:
        self.options = options
        self._base: GuardModel | None = None
        self._guardformer: GuardFormerGuard | None = None

    def load_registry(self) -> PolicySet | None:
        """The registry at `options.policies_path` (None without one); `ModelSetupError` if invalid."""
        path = self.options.policies_path
        try:
            return load_policies(path) if path is not None else None
        except PolicyError as exc:
            raise ModelSetupError(str(exc)) from exc

    def reload(self) -> GuardModel:
        """The served model over the registry as it is now; `ModelSetupError` when it cannot be served."""
        return self.build(self.load_registry())

    def build(self, registry: PolicySet | None) -> GuardModel:
        """The served model over `registry`; `ModelSetupError` when no model can score it."""
        try:
            return self._build(registry)
        except (ModelDirectoryError, PolicyError, PolicyRoutingError) as exc:
            raise ModelSetupError(str(exc)) from exc

    def _build(self, registry: PolicySet | None) -> GuardModel:
        base = self._base_model(registry)
        if isinstance(base, GuardFormerGuard):  # it reads the registry's policies itself
            return base
        if registry is None and self.options.guardformer_path is None:
            return base
        registry = registry if registry is not None else load_policies(DEFAULT_POLICY_DIR)
        _, rest = split_by_model(registry, base.info.policy_ids)
        if not len(rest):
            return route_policies(base, registry)
        return route_policies(base, registry, self._guardformer_over(rest))

    def _base_model(self, registry: PolicySet | None) -> GuardModel:
        """The model at `model_path`: loaded once; a GuardFormer one over `registry`."""
        if self._base is None:
            self._base = _load(self.options, self.options.model_path, registry)
        elif isinstance(self._base, GuardFormerGuard) and registry is not None:
            return self._base.with_policies(registry)
        return self._base

    def _guardformer_over(self, rest: PolicySet) -> GuardModel | None:
        """The GuardFormer over `rest` (None without one): loaded once, then rebuilt."""
        path = self.options.guardformer_path or _packaged_guardformer()
        if path is None:
            return None
        if self._guardformer is None:
            loaded = _load(self.options, path, rest)
            if not isinstance(loaded, GuardFormerGuard):
                return loaded  # not a GuardFormer directory: route_policies says what is wrong
            self._guardformer = loaded
            return loaded
        return self._guardformer.with_policies(rest)


def _packaged_guardformer() -> Path | None:
    """The GuardFormer shipped with the models, when it is installed."""
    return DEFAULT_GUARDFORMER_DIR if (DEFAULT_GUARDFORMER_DIR / CONFIG_FILE).is_file() else None


def _load(options: ServingOptions, path: Path, policies: PolicySet | None) -> GuardModel:
    return load_model(
        path,
        device=options.device,
        cache_dir=options.cache_dir,
        intra_op_threads=options.intra_op_threads,
        precision=options.precision,
        policies=policies,
    )
