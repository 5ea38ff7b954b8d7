"""One guard model over a policy registry: the fixed-head model's policies, GuardFormer for the rest.

A deployment's policies come from the registry (`models.policies`). Each enabled policy is scored
by the first model that can: the embedder guard scores the policies its head was trained on
(with the registry's version and threshold), a GuardFormer scores any policy from its words.
`RoutedGuard` is itself a `GuardModel`, so the worker sees one model with one list of policies.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from models.base.contract import Columns, Cost, Encoded, FloatArray, GuardModel, ModelInfo, Policy
from models.base.directory import fingerprint
from models.policies import PolicyDefinition, PolicySet


class PolicyRoutingError(ValueError):
    """The registry names a policy no configured model can score."""


@dataclass(frozen=True, slots=True)
class RoutedEncoded(Encoded):
    """A prompt encoded by each route's model that it asks for (None: a route it does not ask for,
    left untokenized); each part carries its own model's columns."""

    parts: tuple[Encoded | None, ...] = ()


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
        scored_by = fingerprint(*[(r.model.info.fingerprint, r.columns) for r in self.routes])
        self._info = ModelInfo(name, version, policies, max_length, scored_by)
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

    def encode(self, texts: Sequence[str], columns: Sequence[Columns] | None = None) -> list[Encoded]:
        """Each text tokenized by the routes it asks for alone (a request naming only the
        embedder's policies costs no GuardFormer tokenization)."""
        asked = list(columns) if columns is not None else [None] * len(texts)
        parts: list[list[Encoded | None]] = [[None] * len(self.routes) for _ in texts]
        for index, route in enumerate(self.routes):
            local = [self._route_columns(c, index) for c in asked]
            wanted = [row for row, c in enumerate(local) if c is None or c]
            encoded = route.model.encode([texts[row] for row in wanted], [local[row] for row in wanted])
            for row, part in zip(wanted, encoded, strict=True):
                parts[row][index] = part
        return [RoutedEncoded((), columns=c, parts=tuple(p)) for c, p in zip(asked, parts, strict=True)]

    def cost(self, item: Encoded) -> Cost:
        """Every asked route's rows; the longest row of any (the routes run apart, so this bounds them)."""
        costs = [route.model.cost(part) for route, part in self._parts(item)]
        return Cost(sum(c.rows for c in costs), max((c.longest for c in costs), default=0))

    def split(self, item: Encoded, max_tokens: int) -> list[Encoded]:
        """Each asked route's pieces of its part, as items asking for that route alone."""
        pieces: list[Encoded] = []
        for index, route in enumerate(self.routes):
            part = _parts_of(item)[index]
            if part is None:
                continue
            for piece in route.model.split(part, max_tokens):
                parts: list[Encoded | None] = [None] * len(self.routes)
                parts[index] = piece
                pieces.append(
                    RoutedEncoded((), columns=self._global_columns(index, piece.columns), parts=tuple(parts))
                )
        return pieces

    def score(self, batch: Sequence[Encoded]) -> FloatArray:
        """Each route's model on the items that ask for one of its policies; a route no item asks
        for is not run."""
        out = np.full((len(batch), len(self._info.policies)), np.nan, dtype=np.float32)
        for index, route in enumerate(self.routes):
            rows = [row for row, item in enumerate(batch) if _parts_of(item)[index] is not None]
            if not rows:
                continue
            parts = [_parts_of(batch[row])[index] for row in rows]
            scores = route.model.score([p for p in parts if p is not None])
            start = self._starts[index]
            out[np.asarray(rows)[:, None], np.arange(start, start + len(route.columns))] = scores[
                :, list(route.columns)
            ]
        return out

    def _parts(self, item: Encoded) -> list[tuple[Route, Encoded]]:
        return [
            (route, part)
            for route, part in zip(self.routes, _parts_of(item), strict=True)
            if part is not None
        ]

    def _route_columns(self, columns: Columns, index: int) -> Columns:
        """The asked routed columns that route `index` scores, as columns of its own model (None: all)."""
        if columns is None:
            return None
        start, route = self._starts[index], self.routes[index]
        return tuple(route.columns[c - start] for c in columns if start <= c < start + len(route.columns))

    def _global_columns(self, index: int, local: Columns) -> tuple[int, ...]:
        """Route `index`'s own-model columns `local` (None: all it routes) as routed columns."""
        start, route = self._starts[index], self.routes[index]
        return tuple(start + k for k, column in enumerate(route.columns) if local is None or column in local)


def _parts_of(item: Encoded) -> tuple[Encoded | None, ...]:
    if not isinstance(item, RoutedEncoded):
        raise TypeError("RoutedGuard scores only what its own encode returned")
    return item.parts


def fixed_policy_route(model: GuardModel, wanted: Sequence[PolicyDefinition]) -> tuple[Route, list[Policy]]:
    """The route of a fixed-head model for the wanted policies it knows (registry versions and thresholds)."""
    known = model.info.policy_ids
    columns = tuple(known.index(p.id) for p in wanted)
    return Route(model, columns), [Policy(p.id, p.version, p.threshold) for p in wanted]


def split_by_model(policies: PolicySet, known: Collection[str]) -> tuple[list[PolicyDefinition], PolicySet]:
    """The enabled policies a fixed-head model scores (those it knows by id; never a scope
    policy, which it would read as a restriction), and the rest, for GuardFormer."""
    enabled = list(policies.enabled())
    own = [p for p in enabled if p.id in known and not p.is_scope]
    own_ids = {p.id for p in own}
    return own, PolicySet(tuple(p for p in enabled if p.id not in own_ids))


def route_policies(
    fixed: GuardModel, policies: PolicySet, guardformer: GuardModel | None = None
) -> RoutedGuard:
    """The fixed model for the policies it knows, GuardFormer (already built over the rest) for the others.

    `guardformer` must score exactly the enabled policies `fixed` does not know, in registry order.
    """
    if not len(policies.enabled()):
        raise PolicyRoutingError("the policy registry has no enabled policy")
    known = set(fixed.info.policy_ids)
    own, rest = split_by_model(policies, known)
    if len(rest) and guardformer is None:
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
    if len(rest):
        assert guardformer is not None  # noqa: S101 (checked above)
        if guardformer.info.policy_ids != tuple(p.id for p in rest):
            raise PolicyRoutingError("the GuardFormer model was built over other policies than the rest")
        routes.append(Route(guardformer, tuple(range(len(rest)))))
        infos += guardformer.info.policies
    name = "+".join(route.model.info.name for route in routes)
    version = "+".join(route.model.info.version for route in routes)
    return RoutedGuard(routes, tuple(infos), name, version)
