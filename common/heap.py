"""The daemon's long-lived objects out of the cyclic garbage collector's way.

A full (generation 2) collection walks every tracked object: ~90,000 in a swarm daemon, 30-60 ms of its event loop
each, at moments nobody chooses (measured in the lab's converge runs). Nearly all of them are made at start-up or
when the node joins a swarm (modules, classes, the engine's and the manager's state) and live until the daemon
stops, so they are moved to the collector's permanent generation once they exist (gc.freeze); collections then walk
only what was made since. Reference counting still frees frozen objects; only cycles among them are never collected,
which for objects that live as long as the daemon costs nothing."""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Collect what is garbage now, then take every object left out of future collections."""
    gc.collect()
    gc.freeze()
