"""Every private faust, mode and aiokafka API the worker relies on, in one place, each with why.

Upgrading faust-streaming or aiokafka: check these first (the rest of the worker uses their
documented APIs only). Each is wrapped so that the worker's modules call a public-looking name
here, and a change upstream breaks one module with a message that names it.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any

import faust

# aiokafka.conn is not exported by the aiokafka package. The admin client reports any bootstrap
# failure as a bare KafkaConnectionError; one direct connection per bootstrap server is the only
# way to tell a refused SASL login or an untrusted certificate (fail at once) from a broker that
# is down (wait for it).
from aiokafka.conn import collect_hosts, create_conn

# A function of faust's aiokafka driver, not of faust's public API: it turns faust's broker
# credentials into aiokafka's keyword arguments exactly as faust's own consumer and producer get
# them, so the worker's admin client is secured the same way.
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth


def aiokafka_auth_of(credentials: Any) -> Mapping[str, Any]:
    """aiokafka's security arguments for faust `credentials` (None: PLAINTEXT)."""
    return dict(credentials_to_aiokafka_auth(credentials))


def bootstrap_hosts(bootstrap_servers: str) -> list[tuple[str, int]]:
    """(host, port) of each bootstrap server, in the order given."""
    return [(host, port) for host, port, _ in collect_hosts(bootstrap_servers, randomize=False)]


async def open_connection(host: str, port: int, client_id: str, timeout_ms: int, **auth: Any) -> Any:
    """One broker connection with the worker's credentials: raises what the broker answers them with."""
    return await create_conn(host, port, client_id=client_id, request_timeout_ms=timeout_ms, **auth)


class SignalHookedWorker(faust.Worker):
    """A faust worker whose stop signals call `on_stop_signal` instead of stopping at once.

    mode's Worker handles SIGTERM and SIGINT in `_on_sigterm` / `_on_sigint` and stops through
    `_schedule_shutdown`, all private: there is no public hook to finish the batch in hand before
    faust stops, which the at-least-once contract needs (a drained batch is delivered and acked).
    """

    def on_stop_signal(self, signum: signal.Signals) -> None:
        """Called on SIGTERM / SIGINT; the default stops at once, as faust does."""
        self.schedule_shutdown(signum)

    def schedule_shutdown(self, signum: signal.Signals) -> None:
        """Stop faust as its own signal handler would (commits what is acked, then exits 0)."""
        self._schedule_shutdown(signum)

    def _on_sigterm(self) -> None:
        self.on_stop_signal(signal.SIGTERM)

    def _on_sigint(self) -> None:
        self.on_stop_signal(signal.SIGINT)
