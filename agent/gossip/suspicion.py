"""Lifeguard's suspicion timer (memberlist suspicion.go): starts at max, shrinks toward min with independent confirmations.
Pure arithmetic on times handed in by agent.gossip.core, which owns the timer itself."""

from __future__ import annotations

import math


def suspicion_timeout(mult: int, num_nodes: int, probe_interval: float) -> float:
    """The minimum suspicion timeout: mult * max(1, log10(N)) * probe interval, as memberlist."""
    return mult * max(1.0, math.log10(max(1, num_nodes))) * probe_interval


def remaining(confirmations: int, k: int, elapsed: float, lo: float, hi: float) -> float:
    """Time left: hi - (hi - lo) * log(c + 1) / log(k + 1), never below lo, minus what has elapsed."""
    if k <= 0:
        timeout = lo
    else:
        frac = math.log(confirmations + 1) / math.log(k + 1)
        timeout = max(lo, hi - frac * (hi - lo))
    return timeout - elapsed


class Suspicion:
    """One suspected member: who has confirmed it, when it started, its min/max, the expected confirmations k."""

    __slots__ = ("start", "k", "lo", "hi", "confirmers", "incarnation", "final_probe")

    def __init__(self, start: float, k: int, lo: float, hi: float, first_from: str, incarnation: int) -> None:
        self.start = start
        self.k = k
        self.lo = lo
        self.hi = hi
        self.confirmers = {first_from}   # the first suspecter is not a confirmation
        self.incarnation = incarnation
        self.final_probe = False         # the core's last probe before the verdict is under way

    @property
    def confirmations(self) -> int:
        return len(self.confirmers) - 1

    def confirm(self, sender: str) -> bool:
        """An independent suspicion by sender; True when it counted (then the timer is due sooner)."""
        if self.confirmations >= self.k or sender in self.confirmers:
            return False
        self.confirmers.add(sender)
        return True

    def deadline(self) -> float:
        return self.start + remaining(self.confirmations, self.k, 0.0, self.lo, self.hi)
