"""Run a blocking event iterator (``Engine.ask``) in its own thread and read it from async code.

The thread checks a stop flag between events, so when the HTTP client goes away the generation ends at
the next token (the iterator is closed in its own thread, which closes the model's stream: llama.cpp
stops, the NIM's HTTP response is closed). :class:`ClosingStreamingResponse` sets the flag however the
response ends: finished, client disconnected, or server shutting down.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Iterator

from starlette.responses import StreamingResponse

log = logging.getLogger(__name__)

_ITEM, _ERROR, _END = "item", "error", "end"
HANDOFF_S = 0.05  # longest wait for the event loop to take an item (a busy loop must not stall generation)


class Pump:
    """Iterate what ``start()`` returns in a daemon thread (``start`` runs there too, so its validation and
    set-up cost no extra thread hop); ``await pump.next()`` returns items, raises the exception of ``start``
    or of the iterator, or returns ``Pump.END``. ``stop()`` ends the iteration at the next item. ``on_exit``
    runs in the thread once the iterator is closed (release a concurrency slot there). For items where
    ``urgent(item)`` is true the thread waits (briefly) until the event loop has taken the item."""

    END = object()

    def __init__(self, start: Callable[[], Iterator[Any]], *, on_exit: Callable[[], None] | None = None,
                 urgent: Callable[[Any], bool] = lambda item: True, name: str = "answer"):
        self._start = start
        self._it = None
        self._urgent = urgent
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stop = threading.Event()
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, kind: str, value=None, wait: bool = False) -> bool:
        taken = threading.Event()

        def deliver() -> None:
            self._queue.put_nowait((kind, value))
            taken.set()

        try:
            self._loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self._stop.set()
            return False
        if wait:  # this thread blocks without the GIL, so the loop sends the item at once instead of
            taken.wait(HANDOFF_S)  # queueing behind the Python work of producing the next one
        return True

    def _run(self) -> None:
        error = None
        try:
            self._it = self._start()
            for item in self._it:
                if self._stop.is_set() or not self._put(_ITEM, item, self._urgent(item)):
                    break
        except BaseException as e:  # handed to the reader, which raises it
            error = e
        finally:
            try:
                close = getattr(self._it, "close", None)
                if close is not None:
                    close()
            except Exception:  # noqa: BLE001
                log.exception("closing an answer stream failed")
            if self._on_exit is not None:  # before the reader hears of the end, so a retry finds its slot free
                try:
                    self._on_exit()
                except Exception:  # noqa: BLE001
                    log.exception("answer stream clean-up failed")
            self.finished.set()
            if error is not None:
                self._put(_ERROR, error)
            self._put(_END)

    async def next(self):
        kind, value = await self._queue.get()
        if kind == _ITEM:
            return value
        if kind == _ERROR:
            raise value
        self._queue.put_nowait((_END, None))  # stay at the end for later calls
        return Pump.END

    def stop(self) -> None:
        self._stop.set()


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that calls ``on_close`` however it ends (done, client gone, cancelled)."""

    def __init__(self, content, *, on_close: Callable[[], None], **kwargs):
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


__all__ = ["Pump", "ClosingStreamingResponse"]
