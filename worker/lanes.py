"""One model thread, two lanes: short prompts' calls go before long prompts' calls.

A long prompt (many windows) costs many times a short one. Its windows are scored in calls of
their own, in the long lane, and the model thread always takes a waiting short-lane call first,
so a short prompt waits at most for the one long-lane call already running, never for a whole
long prompt. Within a lane, the calls of the batch taken first run first (`order`: when the
batch was taken), then in the order they were submitted: a batch whose tokenizing finished
early does not overtake an older one still tokenizing, which would then wait for it.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Lane(enum.IntEnum):
    """Which calls the model thread takes first: the lower value."""

    SHORT = 0
    LONG = 1


_STOP = len(Lane)  # after every lane's calls: the thread's last item


class LaneThread:
    """A thread that runs the calls handed to it one at a time, short lane first."""

    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, float, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def run(self, lane: Lane, order: float, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the thread, once no call of a more urgent lane, nor of its lane
        with a lower `order`, is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((lane, order, next(self._order), (loop, future, function, args)))
        return await future

    def shutdown(self) -> None:
        """Run the calls already handed over, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put((_STOP, 0.0, next(self._order), None))
            self._thread.join()

    def _work(self) -> None:
        while True:
            *_, job = self._queue.get()
            if job is None:
                return
            loop, future, function, args = job
            try:
                result = function(*args)
            except BaseException as exc:  # noqa: BLE001 - handed back to the awaiting task
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
