"""Committed-change events and the watchers that stream them: `async for event in watch`, in commit order.
store.py pushes events from apply() without blocking; a watcher too far behind is closed with an error."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from google.protobuf.message import Message

from . import errors
from .errors import StoreError


@dataclass(slots=True)
class Event:
    """One applied action. object is the object after it (for a remove: as it was); old is the
    object before an update. Shared between watchers: treat as read-only."""

    index: int
    action: str  # "create" | "update" | "remove"
    kind: str
    object: Message
    old: Message | None = None


class Watch:
    """A bounded buffer of events for one consumer. Not tied to a loop until iterated."""

    def __init__(self, kinds: frozenset[str] | None, limit: int, on_close: Callable[[Watch], None]) -> None:
        self.kinds = kinds
        self.limit = limit
        self.closed = False
        self.error: StoreError | None = None
        self._buffer: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._on_close = on_close

    def wants(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds

    def push(self, event: Event) -> None:
        """Called by the store for each committed event of a wanted kind; never blocks."""
        self.push_all((event,))

    def push_all(self, events: Sequence[Event]) -> None:
        """The events of one applied entry, all of wanted kinds, in commit order: buffered together and the
        consumer woken once (one wake per entry, not per event). Never blocks."""
        if self.closed or not events:
            return
        room = self.limit - len(self._buffer)
        if len(events) > room:
            # Blocking apply() would stall the whole manager; the consumer re-lists and watches again.
            self._buffer.extend(events[:max(0, room)])
            self.fail(StoreError(errors.RESOURCE_EXHAUSTED,
                                 f"watch fell behind: {self.limit} events unread at index {events[max(0, room)].index}"))
            return
        self._buffer.extend(events)
        self._wake()

    def fail(self, error: StoreError) -> None:
        """Ends the watch with error, raised to the consumer after the events already buffered."""
        self._finish(error)

    def close(self) -> None:
        """Stops the watch: buffered events are dropped and iteration ends."""
        self._buffer.clear()
        self._finish(None)

    def drain(self) -> list[Event]:
        """The buffered events, without waiting (for callers outside a loop and for tests)."""
        events = list(self._buffer)
        self._buffer.clear()
        return events

    def poll(self) -> Event | None:
        """The next buffered event without waiting; None when there is none (or the watch ended: iterate to learn
        how)."""
        return self._buffer.popleft() if self._buffer else None

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self.closed:
                if self.error is not None:
                    raise self.error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _finish(self, error: StoreError | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        self._on_close(self)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
