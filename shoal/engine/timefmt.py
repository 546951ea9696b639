"""Docker's timestamps: moved to common.timefmt (the network layer uses them too); re-exported."""
from __future__ import annotations

from common.timefmt import ZERO_TIME, now_rfc3339, rfc3339_from_ns, unix_seconds  # noqa: F401
