"""Rendered manifests, shared by the deployment tests (each overlay is rendered once)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.helpers import K8S, render

OVERLAYS = ("cpu", "gpu")


@pytest.fixture(scope="session")
def overlays() -> dict[str, list[dict[str, Any]]]:
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def base() -> list[dict[str, Any]]:
    return render(K8S / "base")
