"""Timestamps the way Docker prints them: RFC 3339 with nanoseconds, UTC ("...Z").

Pure helpers shared by the engine, the network layer and the API conversions (in common/).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

ZERO_TIME = "0001-01-01T00:00:00Z"


def now_rfc3339() -> str:
    return rfc3339_from_ns(time.time_ns())


def rfc3339_from_ns(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def unix_seconds(rfc3339: str) -> int:
    """The whole seconds of an RFC 3339 time this module produced (or Docker's zero time)."""
    if not rfc3339 or rfc3339 == ZERO_TIME:
        return 0
    base = rfc3339.rstrip("Z").split(".", 1)[0]
    return int(datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())
