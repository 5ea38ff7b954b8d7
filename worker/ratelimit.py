"""A logger wrapper that says a repeated problem at most once per interval."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Logs a warning at most once every `interval_s`, counting what it held back."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._last = float("-inf")
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._interval_s:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} similar messages suppressed)" if self._suppressed else ""
        self._logger.warning(message + suffix, *args)
        self._last = now
        self._suppressed = 0
