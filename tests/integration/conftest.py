"""Fixtures for tests against the real Kafka and Redis started by deploy/local/services.sh."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadtest.kafka_client import Collector

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = REPO_ROOT / "deploy" / "local" / "services.sh"
KAFKA = os.environ.get("GUARDSTREAM_TEST_KAFKA", "127.0.0.1:9092")
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/15"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _reachable(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def services() -> None:
    missing = [
        name
        for name, addr in (("Kafka", KAFKA), ("Redis", f"127.0.0.1:{REDIS_PORT}"))
        if not _reachable(addr)
    ]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not running: start them with `bash {SERVICES} start` (or `make test`)"
        )


def services_cmd(*args: str) -> None:
    subprocess.run(["bash", str(SERVICES), *args], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@dataclass
class Topics:
    prompts: str
    verdicts: str
    dlq: str
    group: str


@pytest.fixture
def topics() -> Topics:
    run = uuid.uuid4().hex[:8]
    return Topics(f"it-{run}.prompts", f"it-{run}.verdicts", f"it-{run}.dlq", f"it-{run}")


@dataclass
class WorkerProcess:
    """A `guardstream worker` child process."""

    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)

    def start(self, timeout_s: float = 90.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout_s} s:\n{self.log_tail()}")

    def signal_and_wait(self, signum: signal.Signals, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=timeout_s)
        self.exits.append(code)
        self.proc = None
        return code

    def http_get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return str(response.read().decode())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def worker_factory(topics: Topics, onnx_cache_dir: Path, tmp_path: Path) -> Iterator[object]:
    started: list[WorkerProcess] = []

    def make(**env_overrides: str) -> WorkerProcess:
        port = free_port()
        env = {
            **os.environ,
            "GUARDSTREAM_KAFKA__BOOTSTRAP_SERVERS": KAFKA,
            "GUARDSTREAM_KAFKA__INPUT_TOPIC": topics.prompts,
            "GUARDSTREAM_KAFKA__VERDICTS_TOPIC": topics.verdicts,
            "GUARDSTREAM_KAFKA__DLQ_TOPIC": topics.dlq,
            "GUARDSTREAM_KAFKA__GROUP_ID": topics.group,
            "GUARDSTREAM_KAFKA__PARTITIONS": "4",
            "GUARDSTREAM_KAFKA__COMMIT_INTERVAL_S": "0.5",
            "GUARDSTREAM_KAFKA__SESSION_TIMEOUT_S": "6",
            "GUARDSTREAM_REDIS__URL": REDIS_URL,
            "GUARDSTREAM_REDIS__KEY_PREFIX": f"it:{topics.group}:",
            "GUARDSTREAM_MODEL__CACHE_DIR": str(onnx_cache_dir),
            "GUARDSTREAM_BATCHING__MAX_WAIT_MS": "10",
            "GUARDSTREAM_WEB__PORT": str(port),
            **env_overrides,
        }
        worker = WorkerProcess(env, port, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield make
    for worker in started:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()


async def started_collector(topics: Topics) -> Collector:
    """A collector of the test's verdicts and dead-letter topics, reading from their current ends."""
    collector = Collector(KAFKA, topics.verdicts, topics.dlq)
    await collector.start()
    return collector
