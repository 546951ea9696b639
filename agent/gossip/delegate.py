"""The contract between the gossip core (membership, SWIM + Lifeguard) and what rides on it (networkdb's tables).
Shaped like hashicorp/memberlist's Delegate and EventDelegate so each side can be built and tested alone."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class MemberState(Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass(slots=True, frozen=True)
class Member:
    """A gossip member as the core reports it: name is the swarm node id, addr:port its gossip endpoint."""

    name: str
    addr: str
    port: int
    meta: bytes = b""
    incarnation: int = 0
    state: MemberState = MemberState.ALIVE


class Delegate(Protocol):
    """What the layer above gives the core (memberlist.Delegate).

    Optionally also `pending_broadcasts() -> bool`: whether get_broadcasts has anything now. With it the core's
    gossip timer sleeps while nothing is queued (the layer above then tells the driver when it queues one, e.g.
    GossipShell.poke); without it the timer runs every gossip_interval as memberlist's does."""

    def node_meta(self, limit: int) -> bytes:
        """Bytes attached to this member's alive messages (at most limit)."""
        ...

    def notify_msg(self, data: bytes) -> None:
        """A user message another member broadcast or sent (already decrypted and authenticated)."""
        ...

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """User messages to piggyback on the next outgoing packet: each costs len + overhead, total <= limit."""
        ...

    def local_state(self, join: bool) -> bytes:
        """This member's full state for a TCP push-pull exchange."""
        ...

    def merge_remote_state(self, data: bytes, join: bool) -> None:
        """The peer's full state from a push-pull exchange."""
        ...


class EventDelegate(Protocol):
    """Membership changes the core reports (memberlist.EventDelegate); SUSPECT is not reported as a leave."""

    def notify_join(self, member: Member) -> None: ...

    def notify_leave(self, member: Member) -> None: ...

    def notify_update(self, member: Member) -> None: ...
