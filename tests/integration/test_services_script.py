"""deploy/local/services.sh on a state directory it has never used: a clean first start."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.integration.conftest import REPO_ROOT, free_port
from tests.integration.secured_services import KAFKA_LIB

SCRIPT = REPO_ROOT / "deploy" / "local" / "services.sh"


def services(state: Path, *args: str, ports: tuple[int, int]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GUARDSTREAM_LOCAL_DIR": str(state),
        "KAFKA_PORT": str(ports[0]),
        "KAFKA_CONTROLLER_PORT": str(ports[1]),
    }
    command = ["bash", str(SCRIPT), *args, "kafka"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)


def test_a_first_kafka_start_prints_no_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "kafka").mkdir(parents=True)
    (state / "kafka" / "lib").symlink_to(KAFKA_LIB)  # the broker jars of the running services
    ports = (free_port(), free_port())
    try:
        started = services(state, "start", ports=ports)
        assert started.returncode == 0, started.stderr
        assert "No such file or directory" not in started.stdout + started.stderr
        assert started.stderr == "", started.stderr
    finally:
        services(state, "stop", ports=ports)
