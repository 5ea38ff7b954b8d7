"""Reload of the policy registry without a restart.

Every `policies.reload_seconds` the worker takes a fingerprint of the registry's files (after
resolving symlinks, so the atomic `..data` swap of a Kubernetes ConfigMap volume counts as a
change). Only when it changed is the registry loaded and the served model put together again,
off the event loop, on the models already loaded. The pipeline switches to it between batches.
A registry that cannot be served is refused: one log line, `guardstream_policy_reload_failures_total`,
and the last good one stays in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from models.base.contract import GuardModel, ModelInfo
from worker import metrics
from worker.cache import policy_set_version
from worker.pipeline import Pipeline

log = logging.getLogger(__name__)

_SUFFIXES = (".yaml", ".yml")

FileEntry = tuple[str, ...]


def registry_fingerprint(path: Path) -> str:
    """A short hash of what the registry at `path` is made of now.

    A file: its real path, mtime, size and inode. A directory: per YAML file, sorted by name,
    the name, real path, mtime, size and inode. Symlinks are resolved every time. A path that
    cannot be read has a fingerprint too (the reason), so it going missing counts as a change.
    """
    try:
        real = path.resolve(strict=True)
        if real.is_dir():
            files = sorted(p for p in real.iterdir() if p.suffix in _SUFFIXES)
            entries = [_file_entry(file) for file in files]
        else:
            entries = [_file_entry(real)]
    except OSError as exc:
        entries = [("unreadable", type(exc).__name__, str(exc.errno))]
    return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]


def _file_entry(file: Path) -> FileEntry:
    """The name, real path, mtime, size and inode of one file (the name and the error if unreadable)."""
    try:
        real = file.resolve(strict=True)
        stat = real.stat()
    except OSError as exc:
        return (file.name, "unreadable", type(exc).__name__)
    return (file.name, str(real), str(stat.st_mtime_ns), str(stat.st_size), str(stat.st_ino))


def show_registry(info: ModelInfo, shown: tuple[str, str] | None = None) -> tuple[str, str]:
    """Set `guardstream_policy_registry_info` to the registry of `info` (removing `shown`, the labels
    set before); returns the labels set."""
    labels = (policy_set_version(info)[:12], ",".join(f"{p.id}@{p.version}" for p in info.policies))
    if shown is not None and shown != labels:
        metrics.POLICY_REGISTRY_INFO.remove(*shown)
    metrics.POLICY_REGISTRY_INFO.labels(*labels).set(1)
    return labels


def describe(info: ModelInfo) -> str:
    """The policies of `info` for a log line: id@version>=threshold, comma separated."""
    return ", ".join(f"{p.id}@{p.version}>={p.threshold:.3f}" for p in info.policies)


class RegistryWatcher:
    """Switches the pipeline to the registry at `path` whenever its files change and it is valid."""

    def __init__(self, build: Callable[[], GuardModel], pipeline: Pipeline, path: Path, seen: str) -> None:
        """`build`: loads the registry and puts the served model together (raises when it cannot);
        `seen`: the fingerprint of the registry the pipeline's model was built from."""
        self._build = build
        self._pipeline = pipeline
        self._path = path
        self._seen = seen
        self._shown = show_registry(pipeline.model.info)

    async def check(self) -> bool:
        """Reload the registry if its files changed; True when the pipeline switched to a new one."""
        loop = asyncio.get_running_loop()
        seen = await loop.run_in_executor(None, registry_fingerprint, self._path)
        if seen == self._seen:
            return False
        self._seen = seen  # a refused registry is refused once, not at every check
        try:
            model = await loop.run_in_executor(None, self._build)
        except Exception as exc:  # noqa: BLE001 - whatever stops it, the last good registry serves
            metrics.POLICY_RELOAD_FAILURES.inc()
            log.error("policy registry %s refused, still serving the last good one: %s", self._path, exc)
            return False
        self._switch(model)
        return True

    def _switch(self, model: GuardModel) -> None:
        self._pipeline.switch(model)
        self._shown = show_registry(model.info, self._shown)
        metrics.POLICY_RELOADS.inc()
        log.info("policy registry %s reloaded, policies: %s", self._path, describe(model.info))
