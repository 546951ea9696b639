"""Lifeguard's local health awareness (memberlist awareness.go): a score that stretches this member's own timeouts.
Raised by missed nacks and by refuting a suspicion of ourselves, lowered by successful probes; read by agent.gossip.core."""

from __future__ import annotations


class Awareness:
    """Score in [0, max_multiplier - 1]; a timeout is scaled by (score + 1)."""

    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
