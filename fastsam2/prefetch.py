"""Decode (and preprocess) frames on a background thread, ahead of the model.

:class:`Prefetcher` runs an iterator on a daemon thread and hands its items over
through a small bounded queue, so the model never waits for the decoder while
decoding is faster than tracking, and memory stays bounded (at most ``depth``
items wait, plus the one being made). PyAV and PIL release the GIL while
decoding/resizing, so the work overlaps with the model's.

It stops cleanly in every case: at the end of the source, when the source raises
(the exception is re-raised in the consumer, with its original type, at the item
where it happened), and when the consumer stops early (:meth:`close`, also on
garbage collection of a ``with`` block or generator): the thread is told to stop,
unblocked and joined.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")

_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher(Generic[U]):
    """Iterate ``transform(item)`` for ``item`` in ``source``, made on a background thread.

    ``depth`` bounds the queue (items made but not yet taken). Use as an iterator;
    call :meth:`close` (or use ``with``) when stopping before the end.
    """

    def __init__(self, source: Iterable[T], transform: Callable[[T], U] | None = None, depth: int = 2,
                 name: str = "fastsam2-decode") -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._source = source
        self._transform = transform
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def maxsize(self) -> int:
        return self._queue.maxsize

    def _put(self, item: Any) -> bool:
        """Block until there is room (or the consumer stopped); False when told to stop."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        iterator = iter(self._source)
        try:
            for item in iterator:
                if self._stop.is_set():
                    return
                if not self._put(self._transform(item) if self._transform else item):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._put(_Failure(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator source releases its file/container now
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass

    def __iter__(self) -> Iterator[U]:
        return self

    def __next__(self) -> U:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._finish()
            raise StopIteration
        if isinstance(item, _Failure):
            self._finish()
            raise item.exc
        return item

    def _finish(self) -> None:
        self._done = True
        self._thread.join()

    def close(self) -> None:
        """Stop the thread (it may be blocked on a full queue) and wait for it."""
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            try:  # make room so a blocked put returns, then let it see the stop flag
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def __enter__(self) -> Prefetcher[U]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._done:
            self._stop.set()
