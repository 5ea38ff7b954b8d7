"""One guard model over a policy registry: the fixed-head model's policies, GuardFormer for the rest.

A deployment's policies come from the registry (`models.policies`). Each enabled policy is scored
by the first model that can: the embedder guard scores the policies its head was trained on
(with the registry's version and threshold), a GuardFormer scores any policy from its words.
`RoutedGuard` is itself a `GuardModel`, so the worker sees one model with one list of policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from models.base.contract import Encoded, FloatArray, GuardModel, ModelInfo, Policy
from models.policies import PolicyDefinition, PolicySet


class PolicyRoutingError(ValueError):
    """The registry names a policy no configured model can score."""


@dataclass(frozen=True, slots=True)
class RoutedEncoded(Encoded):
    """A prompt encoded once per model; `windows` (all of them) is what the batcher budgets."""

    parts: tuple[Encoded, ...] = ()


@dataclass(frozen=True)
class Route:
    """A model and the columns of its scores that the routed model returns."""

    model: GuardModel
    columns: tuple[int, ...]


class RoutedGuard:
    """Scores every enabled policy of a registry with the model that owns it."""

    def __init__(
        self, routes: Sequence[Route], policies: tuple[Policy, ...], name: str, version: str
    ) -> None:
        self.routes = tuple(routes)
        max_length = max(route.model.info.max_length for route in self.routes)
        self._info = ModelInfo(name, version, policies, max_length)
        #: the first routed column of each route
        self._starts = tuple(np.cumsum([0, *(len(route.columns) for route in self.routes)])[:-1].tolist())

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def device(self) -> str:
        return self.routes[0].model.device

    def normalize(self, text: str) -> str:
        return self.routes[0].model.normalize(text)

    def encode(self, texts: list[str]) -> list[Encoded]:
        per_model = [route.model.encode(texts) for route in self.routes]
        return [
            RoutedEncoded(tuple(w for part in parts for w in part.windows), parts)
            for parts in zip(*per_model, strict=True)
        ]

    def score(self, batch: list[Encoded]) -> FloatArray:
        """Each route's model on the items that ask for one of its policies; a route no item asks
        for is not run (a request naming only the embedder's policies costs no GuardFormer rows)."""
        out = np.full((len(batch), len(self._info.policies)), np.nan, dtype=np.float32)
        for index, route in enumerate(self.routes):
            start, width = self._starts[index], len(route.columns)
            asked = [self._route_columns(item, route, start) for item in batch]
            if not any(columns is None or columns for columns in asked):
                continue
            parts = [
                replace(_part(item, index), columns=columns)
                for item, columns in zip(batch, asked, strict=True)
            ]
            out[:, start : start + width] = route.model.score(parts)[:, list(route.columns)]
        return out

    @staticmethod
    def _route_columns(item: Encoded, route: Route, start: int) -> tuple[int, ...] | None:
        """The item's asked columns that the route scores, as columns of the route's model (None: all)."""
        if item.columns is None:
            return None
        width = len(route.columns)
        return tuple(route.columns[c - start] for c in item.columns if start <= c < start + width)


def _part(item: Encoded, index: int) -> Encoded:
    if not isinstance(item, RoutedEncoded):
        raise TypeError("RoutedGuard scores only what its own encode returned")
    return item.parts[index]


def fixed_policy_route(model: GuardModel, wanted: Sequence[PolicyDefinition]) -> tuple[Route, list[Policy]]:
    """The route of a fixed-head model for the wanted policies it knows (registry versions and thresholds)."""
    known = model.info.policy_ids
    columns = tuple(known.index(p.id) for p in wanted)
    return Route(model, columns), [Policy(p.id, p.version, p.threshold) for p in wanted]


def route_policies(
    fixed: GuardModel, policies: PolicySet, guardformer: GuardModel | None = None
) -> RoutedGuard:
    """The fixed model for the policies it knows, GuardFormer (already built over the rest) for the others.

    `guardformer` must score exactly the enabled policies `fixed` does not know, in registry order.
    """
    enabled = list(policies.enabled())
    if not enabled:
        raise PolicyRoutingError("the policy registry has no enabled policy")
    known = set(fixed.info.policy_ids)
    own = [p for p in enabled if p.id in known]
    rest = [p for p in enabled if p.id not in known]
    if rest and guardformer is None:
        names = ", ".join(f"{p.id} ({p.source or 'registry'})" for p in rest)
        raise PolicyRoutingError(
            f"no model scores {names}: {fixed.info.name} scores only {', '.join(sorted(known))}; "
            "configure a GuardFormer model (GUARDSTREAM_MODEL__GUARDFORMER_PATH) for the other policies"
        )
    routes: list[Route] = []
    infos: list[Policy] = []
    if own:
        route, owned = fixed_policy_route(fixed, own)
        routes.append(route)
        infos += owned
    if rest:
        assert guardformer is not None  # noqa: S101 (checked above)
        if guardformer.info.policy_ids != tuple(p.id for p in rest):
            raise PolicyRoutingError("the GuardFormer model was built over other policies than the rest")
        routes.append(Route(guardformer, tuple(range(len(rest)))))
        infos += guardformer.info.policies
    name = "+".join(route.model.info.name for route in routes)
    version = "+".join(route.model.info.version for route in routes)
    return RoutedGuard(routes, tuple(infos), name, version)
