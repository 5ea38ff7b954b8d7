"""A secured Kafka (SASL_SSL, PLAIN) and a secured Redis (AUTH, TLS) for the integration tests.

Both are private to the test run: a second single-node KRaft broker from the jars that
deploy/local/services.sh fetched into .local/kafka/lib, and a second redis-server, each on free
ports and with its state in a pytest temporary directory. The services of services.sh on
9092/6379 are never touched. The TLS certificates come from the `openssl` command line: a CA
made for the run and a server certificate for 127.0.0.1 and localhost signed by it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from tests.integration.conftest import REPO_ROOT, free_port

LOCAL_DIR = Path(os.environ.get("GUARDSTREAM_LOCAL_DIR", REPO_ROOT / ".local"))
KAFKA_LIB = LOCAL_DIR / "kafka" / "lib"
KAFKA_LOG4J = REPO_ROOT / "deploy" / "local" / "kafka" / "log4j2.xml"
HOST = "127.0.0.1"
KAFKA_USER = "guardstream"
KAFKA_START_TIMEOUT_S = 90.0
REDIS_START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 20.0


# ----------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the run's CA and of the server certificate it signed."""

    ca_cert: Path
    server_cert: Path
    server_key: Path  # unencrypted PKCS#8
    server_keystore: Path  # the key followed by the certificate chain, as Kafka's PEM keystore

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the run's CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def _openssl(*args: str, cwd: Path) -> None:
    """Run one openssl command in `cwd`; raise with its output if it fails."""
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _key_and_request(directory: Path, name: str, subject: str) -> None:
    """A new RSA key `name`.key (PKCS#8, unencrypted) and its signing request `name`.csr."""
    _openssl("genpkey", "-algorithm", "RSA", "-out", f"{name}.key", cwd=directory)  # 2048 bits
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=directory)


def make_certificates(directory: Path) -> TlsFiles:
    """Create a CA and a server certificate for 127.0.0.1/localhost (2 days) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n"
    )
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _key_and_request(directory, "ca", "/CN=guardstream test CA")
    _openssl(
        "x509", "-req", "-in", "ca.csr", "-key", "ca.key", "-days", "2",
        "-extfile", "ca.ext", "-out", "ca.pem", cwd=directory,
    )  # fmt: skip
    _key_and_request(directory, "server", "/CN=localhost")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "server.ext", "-out", "server.pem", cwd=directory,
    )  # fmt: skip
    keystore = directory / "server.keystore.pem"
    keystore.write_text((directory / "server.key").read_text() + (directory / "server.pem").read_text())
    return TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key", keystore)


# ----------------------------------------------------------------------------- processes


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait up to `timeout_s`, then SIGKILL; returns once the process is reaped."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, or a note that it is missing."""
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ----------------------------------------------------------------------------- kafka


@dataclass
class SecuredKafka:
    """A running single-node KRaft broker whose only client listener is SASL_SSL with PLAIN."""

    bootstrap: str
    username: str
    password: str
    tls: TlsFiles
    proc: subprocess.Popen[bytes]
    out_path: Path

    def client_kwargs(self, password: str | None = None) -> dict[str, Any]:
        """Keyword arguments of an aiokafka client for this broker (optionally a wrong password)."""
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password if password is None else password,
            "ssl_context": self.tls.client_context(),
        }

    def worker_env(self, password: str | None = None) -> dict[str, str]:
        """The worker's environment variables to connect to this broker."""
        return {
            "GUARDSTREAM_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "GUARDSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "GUARDSTREAM_KAFKA__SASL_MECHANISM": "PLAIN",
            "GUARDSTREAM_KAFKA__SASL_USERNAME": self.username,
            "GUARDSTREAM_KAFKA__SASL_PASSWORD": self.password if password is None else password,
            "GUARDSTREAM_KAFKA__SSL_CAFILE": str(self.tls.ca_cert),
        }

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        stop_process(self.proc)


def kafka_properties(
    directory: Path, tls: TlsFiles, port: int, controller_port: int, users: dict[str, str]
) -> str:
    """server.properties of a combined broker+controller with a SASL_SSL (PLAIN) listener.

    `users` maps user names to passwords; the first one is also the inter-broker identity.
    """
    admin, admin_password = next(iter(users.items()))
    accounts = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{admin}" password="{admin_password}" {accounts};'
    )
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{HOST}:{controller_port}",
        "controller.listener.names=CONTROLLER",
        f"listeners=SASL_SSL://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        f"advertised.listeners=SASL_SSL://{HOST}:{port}",
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=SASL_SSL",
        "sasl.enabled.mechanisms=PLAIN",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        f"listener.name.sasl_ssl.plain.sasl.jaas.config={jaas}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={tls.server_keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={tls.ca_cert}",
        "ssl.client.auth=none",
        f"log.dirs={directory / 'data'}",
        "num.partitions=1",
        "default.replication.factor=1",
        "min.insync.replicas=1",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "num.network.threads=2",
        "num.io.threads=2",
        "background.threads=2",
    ]
    return "\n".join(lines) + "\n"


def _java(*args: str, out: Path) -> list[str]:
    """The java command line running a Kafka main class from .local/kafka/lib."""
    return [
        "java", "-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}", f"-Dkafka.logs.dir={out.parent / 'logs'}",
        "-cp", f"{KAFKA_LIB}/*", *args,
    ]  # fmt: skip


def _format_storage(directory: Path, props: Path) -> None:
    """Format the KRaft log directory with a new cluster id (kafka.tools.StorageTool)."""
    out = directory / "format.log"
    uuid = subprocess.run(
        _java("kafka.tools.StorageTool", "random-uuid", out=out),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()[-1]  # fmt: skip
    done = subprocess.run(
        _java("kafka.tools.StorageTool", "format", "-t", uuid, "-c", str(props), out=out),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"kafka storage format failed:\n{done.stdout}\n{done.stderr}")


async def _sasl_ssl_answers(kafka: SecuredKafka) -> bool:
    """True once an aiokafka admin client logs in over SASL_SSL and lists the topics."""
    admin = AIOKafkaAdminClient(client_id="secured-probe", request_timeout_ms=5000, **kafka.client_kwargs())
    try:
        await admin.start()
        await admin.list_topics()
    except (KafkaError, OSError, ssl.SSLError):
        return False
    finally:
        await admin.close()
    return True


async def wait_kafka_ready(kafka: SecuredKafka, timeout_s: float = KAFKA_START_TIMEOUT_S) -> None:
    """Wait until the broker accepts a SASL_SSL login; raise with its output if it dies or is late."""
    deadline = time.monotonic() + timeout_s
    while not await _sasl_ssl_answers(kafka):
        if kafka.proc.poll() is not None:
            raise RuntimeError(f"secured Kafka exited with {kafka.proc.returncode}:\n{_tail(kafka.out_path)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"secured Kafka did not answer in {timeout_s:.0f} s:\n{_tail(kafka.out_path)}")
        await asyncio.sleep(0.5)


def two_free_ports() -> tuple[int, int]:
    """Two distinct free loopback ports (the client and the controller listener)."""
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def start_kafka(directory: Path, tls: TlsFiles) -> SecuredKafka:
    """Start a private SASL_SSL broker in `directory` (not waiting for it: see wait_kafka_ready)."""
    if not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
        raise RuntimeError(
            f"no Kafka jars in {KAFKA_LIB}: run `bash deploy/local/services.sh start kafka` once"
        )
    directory.mkdir(parents=True, exist_ok=True)
    users = {"admin": secrets.token_urlsafe(16), KAFKA_USER: secrets.token_urlsafe(16)}
    port, controller_port = two_free_ports()
    props = directory / "server.properties"
    props.write_text(kafka_properties(directory, tls, port, controller_port, users))
    _format_storage(directory, props)
    out_path = directory / "kafka.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            _java("kafka.Kafka", str(props), out=out_path),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    return SecuredKafka(f"{HOST}:{port}", KAFKA_USER, users[KAFKA_USER], tls, proc, out_path)


# ----------------------------------------------------------------------------- redis


def redis_supports_tls() -> bool:
    """True if the local redis-server is built with TLS (it links OpenSSL's libssl)."""
    server = shutil.which("redis-server")
    if server is None:
        return False
    done = subprocess.run(["ldd", server], capture_output=True, text=True, timeout=10)
    return "libssl" in done.stdout


@dataclass
class SecuredRedis:
    """A running redis-server that wants a password, over TLS when the build supports it."""

    port: int
    password: str
    tls: TlsFiles | None
    proc: subprocess.Popen[bytes]
    log_path: Path

    def url(self, password: str | None = None, db: int = 0) -> str:
        """The worker's Redis URL (rediss:// with the CA file over TLS), optionally a wrong password."""
        secret = self.password if password is None else password
        if self.tls is None:
            return f"redis://:{secret}@{HOST}:{self.port}/{db}"
        return f"rediss://:{secret}@{HOST}:{self.port}/{db}?ssl_ca_certs={self.tls.ca_cert}"

    def client(self) -> redis.Redis:
        """A synchronous client logged in with the right password."""
        return redis.Redis.from_url(self.url(), socket_timeout=2, socket_connect_timeout=2)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        stop_process(self.proc)


def redis_config(directory: Path, port: int, password: str, tls: TlsFiles | None) -> str:
    """redis.conf: loopback only, a password, no persistence; TLS-only on `port` if `tls`."""
    lines = [
        f"bind {HOST}",
        "protected-mode yes",
        f"requirepass {password}",
        'save ""',
        "appendonly no",
        f"dir {directory}",
        f"logfile {directory / 'redis.log'}",
    ]
    if tls is None:
        lines.append(f"port {port}")
    else:
        lines += [
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {tls.server_cert}",
            f"tls-key-file {tls.server_key}",
            f"tls-ca-cert-file {tls.ca_cert}",
            "tls-auth-clients no",
        ]
    return "\n".join(lines) + "\n"


def wait_redis_ready(server: SecuredRedis, timeout_s: float = REDIS_START_TIMEOUT_S) -> None:
    """Wait until an authenticated PING succeeds; raise with the server's log if it does not."""
    deadline = time.monotonic() + timeout_s
    client = server.client()
    try:
        while True:
            try:
                if client.ping():
                    return
            except (redis.RedisError, OSError):
                pass
            if server.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"secured Redis did not answer:\n{_tail(server.log_path)}")
            time.sleep(0.1)
    finally:
        client.close()


def start_redis(directory: Path, tls: TlsFiles | None) -> SecuredRedis:
    """Start a private password-protected redis-server in `directory` and wait for it."""
    directory.mkdir(parents=True, exist_ok=True)
    port, password = free_port(), secrets.token_urlsafe(16)
    config = directory / "redis.conf"
    config.write_text(redis_config(directory, port, password, tls))
    config.chmod(0o600)
    proc = subprocess.Popen(
        ["redis-server", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = SecuredRedis(port, password, tls, proc, directory / "redis.log")
    try:
        wait_redis_ready(server)
    except BaseException:
        server.stop()
        raise
    return server
