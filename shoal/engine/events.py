"""The daemon's event log: a bounded in-memory ring of Docker event messages, their filters and
the live subscriptions `GET /events` streams (shoal.api.routes_system reads it; the engine emits).

Pure except the clock (passed in) and asyncio queues for subscribers. Matching follows moby's
daemon/events/filter.go: type/event exact, container/network fuzzy on id or name, image on id or
name with or without tag, label on the actor's attributes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errdefs import InvalidParameter

log = logging.getLogger(__name__)

RING_SIZE = 1024  # moby's eventsLimit: what a since-query can reach back to
SUBSCRIBER_QUEUE = 1024  # a reader that falls this far behind is dropped, as moby's pubsub does
ACCEPTED_FILTERS = frozenset((
    "config", "container", "daemon", "event", "image", "label", "network", "node",
    "plugin", "scope", "secret", "service", "type", "volume",
))  # fmt: skip
_FUZZY_EVENTS = frozenset(("health_status", "exec_create", "exec_start"))


@dataclass(slots=True)
class Event:
    type: str  # container | network | image | volume | daemon ...
    action: str
    actor_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    time_nano: int = 0
    scope: str = "local"

    def to_json(self) -> dict[str, Any]:
        """moby's events.Message, with the deprecated status/id/from it still fills for
        containers and images."""
        out: dict[str, Any] = {}
        if self.type in ("container", "image"):  # Go's omitempty: empty ones are left out
            legacy = {"status": self.action, "id": self.actor_id,
                      "from": self.attributes.get("image", "") if self.type == "container" else ""}
            out.update({k: v for k, v in legacy.items() if v})
        out.update({
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
            "scope": self.scope,
            "time": self.time_nano // 1_000_000_000,
            "timeNano": self.time_nano,
        })
        return out


# ---- filters ------------------------------------------------------------------------

def validate_filters(filters: Mapping[str, list[str]]) -> None:
    for key in filters:
        if key not in ACCEPTED_FILTERS:
            raise InvalidParameter(f"invalid filter '{key}'")


def _exact(filters: Mapping[str, list[str]], key: str, *sources: str) -> bool:
    wanted = filters.get(key)
    return not wanted or any(s in wanted for s in sources)


def _fuzzy(filters: Mapping[str, list[str]], key: str, *sources: str) -> bool:
    """moby's FuzzyMatch: exact, or a filter value that is a prefix of the source."""
    wanted = filters.get(key)
    if not wanted:
        return True
    return any(s == w or (s and s.startswith(w)) for s in sources for w in wanted)


def _strip_tag(ref: str) -> str:
    last = ref.rsplit("/", 1)[-1]
    if "@" in ref:
        return ref.split("@", 1)[0]
    return ref.rsplit(":", 1)[0] if ":" in last else ref


def _labels(filters: Mapping[str, list[str]], attributes: Mapping[str, str]) -> bool:
    for wanted in filters.get("label", []):
        key, sep, value = wanted.partition("=")
        if key not in attributes or (sep and attributes[key] != value):
            return False
    return True


def matches(event: Event, filters: Mapping[str, list[str]]) -> bool:
    """Whether `event` passes every filter (values of one key: any of them)."""
    attrs = event.attributes
    if filters.get("event") and _FUZZY_EVENTS & set(filters["event"]):
        # moby #25798: "exec_start" also matches "exec_start: sh -c ..."
        if not _fuzzy(filters, "event", event.action):
            return False
    elif not _exact(filters, "event", event.action):
        return False
    if not _exact(filters, "type", event.type) or not _exact(filters, "scope", event.scope):
        return False
    for kind in ("container", "network", "plugin", "volume", "node", "service", "secret", "config"):
        if not _fuzzy(filters, kind, event.actor_id, attrs.get("name", "")):
            return False
    image_name = attrs.get("name" if event.type == "image" else "image", "")
    if not _exact(filters, "image", event.actor_id, image_name, _strip_tag(event.actor_id), _strip_tag(image_name)):
        return False
    return _labels(filters, attrs)


# ---- times --------------------------------------------------------------------------

def parse_timestamp(value: str, name: str) -> int | None:
    """`since`/`until` as the CLI sends them ("seconds[.nanoseconds]") -> unix nanoseconds;
    "" -> None. Wording of Go's strconv for a bad value, as moby answers it."""
    if value == "":
        return None
    seconds, dot, fraction = value.partition(".")
    for part in (seconds,) + ((fraction,) if dot else ()):
        body = part[1:] if part[:1] in "+-" else part
        if not body.isdigit() or not body.isascii():
            raise InvalidParameter(f'strconv.ParseInt: parsing "{part}": invalid syntax')
    nanos = 0
    if dot:
        digits = fraction.lstrip("+-")[:9]
        nanos = int(digits.ljust(9, "0")) if digits else 0
    return int(seconds) * 1_000_000_000 + nanos


# ---- the log ------------------------------------------------------------------------

class Subscription:
    """One `GET /events` reader: a bounded queue; `None` in it means "dropped, too slow"."""

    def __init__(self, filters: Mapping[str, list[str]]) -> None:
        self.filters = dict(filters)
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=SUBSCRIBER_QUEUE + 1)
        self.dropped = False

    def offer(self, event: Event) -> None:
        if self.dropped or not matches(event, self.filters):
            return
        if self.queue.qsize() >= SUBSCRIBER_QUEUE:
            self.dropped = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)


class EventLog:
    """The ring of the last RING_SIZE events and the live subscriptions."""

    def __init__(self, clock: Callable[[], int] = time.time_ns, size: int = RING_SIZE) -> None:
        self._clock = clock
        self._ring: deque[Event] = deque(maxlen=size)
        self._subscribers: set[Subscription] = set()
        self._last = 0

    def emit(self, type_: str, action: str, actor_id: str, attributes: Mapping[str, str] | None = None) -> Event:
        """Records one event and hands it to every live subscriber; never raises."""
        now = self._clock()
        now = max(now, self._last + 1)  # strictly increasing: since/until stay unambiguous
        self._last = now
        event = Event(type_, action, actor_id, {k: str(v) for k, v in (attributes or {}).items()}, now)
        self._ring.append(event)
        for subscriber in list(self._subscribers):
            subscriber.offer(event)
        return event

    def past(self, since: int | None, until: int | None, filters: Mapping[str, list[str]]) -> list[Event]:
        """What moby's loadBufferedEvents returns: nothing without since/until, else the
        ring's events at or after since (and not after until) that pass the filters."""
        if since is None and until is None:
            return []
        return [
            e for e in self._ring
            if (since is None or e.time_nano >= since) and (until is None or e.time_nano <= until)
            and matches(e, filters)
        ]

    def subscribe(self, filters: Mapping[str, list[str]]) -> Subscription:
        subscription = Subscription(filters)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    @property
    def listeners(self) -> int:
        return len(self._subscribers)

    def __len__(self) -> int:
        return len(self._ring)

    def now(self) -> int:
        return self._clock()


# ---- attributes as moby sets them ---------------------------------------------------

def container_attributes(labels: Mapping[str, str], image: str, name: str, **extra: Any) -> dict[str, str]:
    """As moby's LogContainerEventWithAttributes: the action's own (exitCode, signal,
    execID...), then the container's labels, then image and name (they win)."""
    attributes = {k: str(v) for k, v in extra.items()}
    attributes.update({str(k): str(v) for k, v in labels.items()})
    if image:
        attributes["image"] = image
    attributes["name"] = name
    return attributes


def container_event(log_: EventLog, container: Any, action: str, **extra: Any) -> Event:
    """Emits a container event for a shoal.engine.records.ContainerRecord."""
    return log_.emit("container", action, container.id,
                     container_attributes(container.labels, container.image, container.name, **extra))


def network_attributes(name: str, driver: str, container_id: str = "") -> dict[str, str]:
    attributes = {"name": name, "type": driver}
    if container_id:
        attributes["container"] = container_id
    return attributes


def exec_action(action: str, args: Iterable[str]) -> str:
    """moby names exec events "exec_create: ENTRYPOINT ARGS" (and exec_start likewise): the
    entrypoint, a space, the arguments joined ("exec_create: true " for a lone command)."""
    argv = list(args)
    return f"{action}: {argv[0] if argv else ''} {' '.join(argv[1:])}"
