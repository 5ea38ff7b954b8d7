"""Liveness, readiness and metrics endpoints, served by the worker's own small web server.

- `/health/live`: 200 while the event loop answers (a stuck loop fails the probe).
- `/health/ready`: 200 once the model is loaded and the worker has joined its consumer group;
  503 while starting or draining on shutdown.
- `/metrics`: Prometheus text format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from worker import metrics
from worker.config import WebSettings

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class Health:
    """What the probes report."""

    ready: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        metrics.READY.set(1 if ready else 0)


def health_app(health: Health) -> web.Application:
    """The three endpoints."""

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def ready(request: web.Request) -> web.Response:
        body = {"status": "ready" if health.ready else "not ready", **health.details}
        return web.json_response(body, status=200 if health.ready else 503)

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": PROMETHEUS_TEXT})

    app = web.Application()
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", prometheus)
    return app


async def start_health_server(settings: WebSettings, health: Health) -> web.AppRunner:
    """Serve the endpoints on `settings.host:port` until the returned runner's `cleanup`."""
    runner = web.AppRunner(health_app(health), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    return runner
