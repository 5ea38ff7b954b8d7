"""Liveness, readiness and metrics endpoints, served by faust's web server.

- `/health/live`: 200 while the event loop answers (a stuck loop fails the probe).
- `/health/ready`: 200 once the model is loaded and the agent consumes; 503 while starting or
  draining on shutdown.
- `/metrics`: Prometheus text format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust

from worker import metrics


@dataclass(slots=True)
class Health:
    """What the probes report."""

    ready: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        metrics.READY.set(1 if ready else 0)


def add_health_pages(app: faust.App, health: Health) -> None:
    """Register the three endpoints on the app's web server."""

    @app.page("/health/live")
    async def live(view: Any, request: Any) -> Any:
        return view.json({"status": "alive"})

    @app.page("/health/ready")
    async def ready(view: Any, request: Any) -> Any:
        status = 200 if health.ready else 503
        body = {"status": "ready" if health.ready else "not ready", **health.details}
        return view.json(body, status=status)

    @app.page("/metrics")
    async def prometheus(view: Any, request: Any) -> Any:
        return view.bytes(metrics.render(), content_type="text/plain; version=0.0.4")
