"""Every private aiokafka API the worker relies on, in one place, each with why.

Upgrading aiokafka: check these first (the rest of the worker uses its documented API only).
Each is wrapped so that the worker's modules call a public-looking name here, and a change
upstream breaks one module with a message that names it.
"""

from __future__ import annotations

from typing import Any

# aiokafka.conn is not exported by the aiokafka package. The admin client reports any bootstrap
# failure as a bare KafkaConnectionError; one direct connection per bootstrap server is the only
# way to tell a refused SASL login or an untrusted certificate (fail at once) from a broker that
# is down (wait for it).
from aiokafka.conn import collect_hosts, create_conn


def bootstrap_hosts(bootstrap_servers: str) -> list[tuple[str, int]]:
    """(host, port) of each bootstrap server, in the order given."""
    return [(host, port) for host, port, _ in collect_hosts(bootstrap_servers, randomize=False)]


async def open_connection(host: str, port: int, client_id: str, timeout_ms: int, **auth: Any) -> Any:
    """One broker connection with the worker's credentials: raises what the broker answers them with."""
    return await create_conn(host, port, client_id=client_id, request_timeout_ms=timeout_ms, **auth)
