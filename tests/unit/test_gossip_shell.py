"""The gossip shell on real loopback sockets (127.0.0.1 only): a group forms, a stopped member is declared dead, keys
rotate with nobody lost, and garbage / unknown-key / forged packets are dropped and counted. Fast timers, polled."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable

import pytest

from agent.gossip import wire
from agent.gossip.core import GossipConfig
from agent.gossip.delegate import Member, MemberState
from agent.gossip.keyring import Keyring, key_label
from agent.gossip.shell import GossipShell
from common.errdefs import Unavailable

LO = "127.0.0.1"


def fast() -> GossipConfig:
    # 5x faster than the defaults so a test takes seconds; same ratios
    return GossipConfig(probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.04, suspicion_mult=2,
                        push_pull_interval=2.0, leave_timeout=1.0)


class Recorder:
    """Both delegates at once: records events and user messages, broadcasts what is queued."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[tuple[str, str, MemberState]] = []
        self.msgs: list[bytes] = []
        self.outgoing: list[bytes] = []

    def notify_join(self, m: Member) -> None:
        self.events.append(("join", m.name, m.state))

    def notify_leave(self, m: Member) -> None:
        self.events.append(("leave", m.name, m.state))

    def notify_update(self, m: Member) -> None:
        self.events.append(("update", m.name, m.state))

    def node_meta(self, limit: int) -> bytes:
        return b""

    def notify_msg(self, data: bytes) -> None:
        self.msgs.append(data)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        out, self.outgoing = self.outgoing, []
        return out

    def local_state(self, join: bool) -> bytes:
        return b""

    def merge_remote_state(self, data: bytes, join: bool) -> None:
        pass


async def until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def states(shell: GossipShell) -> dict[str, MemberState]:
    return {m.name: m.state for m in shell.members()}


async def group(n: int, keys: list[bytes]) -> tuple[list[GossipShell], list[Recorder]]:
    recs = [Recorder(f"n{i}") for i in range(n)]
    shells = [GossipShell(f"n{i}", LO, 0, LO, keys, recs[i], recs[i], fast()) for i in range(n)]
    for s in shells:
        await s.start()
    for s in shells[1:]:
        assert await s.join([f"{LO}:{shells[0].port}"]) == 1
    names = {s.name for s in shells}
    await until(lambda: all({k for k, v in states(s).items() if v is MemberState.ALIVE} == names for s in shells),
                what="the group to form")
    return shells, recs


async def stop_all(shells: list[GossipShell]) -> None:
    for s in shells:
        await s.stop()


def test_shells_form_a_group_and_a_stopped_member_is_declared_dead_by_the_others() -> None:
    async def run() -> None:
        shells, recs = await group(4, [os.urandom(32)])
        try:
            await shells[3].stop()
            await until(lambda: all(states(s)["n3"] is MemberState.DEAD for s in shells[:3]), 15.0, "n3 dead")
            for r in recs[:3]:
                assert ("leave", "n3", MemberState.DEAD) in r.events
            assert all(states(s)[x] is not MemberState.DEAD for s in shells[:3] for x in ("n0", "n1", "n2"))
        finally:
            await stop_all(shells[:3])
    asyncio.run(run())


def test_a_member_that_leaves_is_seen_as_left_not_dead() -> None:
    async def run() -> None:
        shells, recs = await group(3, [os.urandom(16)])
        try:
            await shells[2].leave()
            await shells[2].stop()
            await until(lambda: all(states(s)["n2"] is MemberState.LEFT for s in shells[:2]), 5.0, "n2 left")
            assert ("leave", "n2", MemberState.LEFT) in recs[0].events
        finally:
            await stop_all(shells[:2])
    asyncio.run(run())


def test_keys_rotate_without_a_member_dropping_out() -> None:
    async def run() -> None:
        k1, k2 = os.urandom(32), os.urandom(32)
        shells, recs = await group(3, [k1])
        try:
            async def settle() -> None:
                await asyncio.sleep(1.0)   # five probe intervals under the new keys (no condition to poll for)
            for s in shells:                       # 1. everyone learns the new key, still sealing with the old
                s.set_keys([k1, k2], primary=k1)
            await settle()
            for s in shells:                       # 2. one by one they seal with the new key
                s.set_keys([k1, k2], primary=k2)
                await settle()
            for s in shells:                       # 3. the old key goes
                s.set_keys([k2])
            await settle()
            assert all(e[0] != "leave" for r in recs for e in r.events)
            assert all(v is MemberState.ALIVE for s in shells for v in states(s).values())
            assert all(s.counters().get("bad_tag", 0) == s.counters().get("unknown_key", 0) == 0 for s in shells)
            assert shells[0].keyring.keys == [k2]
        finally:
            await stop_all(shells)
    asyncio.run(run())


def test_udp_garbage_truncated_and_unknown_key_packets_are_dropped_and_counted() -> None:
    async def run() -> None:
        key = os.urandom(32)
        shells, recs = await group(2, [key])
        target = shells[0]
        before = states(target)
        plain = wire.encode_packet([wire.encode(wire.Dead(99, "n1", "evil"))])
        other = os.urandom(32)
        while key_label(other) == key_label(key):   # a label collision would make it a bad tag instead
            other = os.urandom(32)
        stranger = Keyring([other]).seal(plain)
        tampered = bytearray(Keyring([key]).seal(plain))
        tampered[-1] ^= 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for data in (b"\x01" * 5, b"\x07" + os.urandom(60), stranger, bytes(tampered)):
                sock.sendto(data, (LO, target.port))
            kinds = ("truncated", "version", "unknown_key", "bad_tag")
            await until(lambda: sum(target.counters().get(k, 0) for k in kinds) >= 4, what="4 drops")
            assert {k: target.counters().get(k, 0) for k in kinds} == dict.fromkeys(kinds, 1)
            assert states(target) == before
            assert not [e for e in recs[0].events if e[0] == "leave"]
        finally:
            sock.close()
            await stop_all(shells)
    asyncio.run(run())


def test_a_forged_death_with_an_old_incarnation_is_dropped_and_counted() -> None:
    async def run() -> None:
        key = os.urandom(32)
        shells, recs = await group(2, [key])
        n0, n1 = shells
        try:
            n1.update_meta()    # n1 moves to incarnation 1
            await until(lambda: any(m.name == "n1" and m.incarnation == 1 for m in n0.members()), what="inc 1")
            forged = wire.encode_packet([wire.encode(wire.Dead(0, "n1", "evil"))])
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.sendto(Keyring([key]).seal(forged), (LO, n0.port))
            sock.close()
            await until(lambda: n0.counters()["stale_updates"] >= 1, what="the stale update to be counted")
            assert states(n0)["n1"] is MemberState.ALIVE
            assert not [e for e in recs[0].events if e[0] == "leave"]
        finally:
            await stop_all(shells)
    asyncio.run(run())


def test_tcp_garbage_oversize_and_truncated_streams_are_closed_and_counted() -> None:
    async def run() -> None:
        key = os.urandom(32)
        shells, _ = await group(2, [key])
        target = shells[0]
        try:
            async def send(data: bytes) -> bytes:
                reader, writer = await asyncio.open_connection(LO, target.port)
                writer.write(data)
                if not data.startswith(b"\xff"):
                    writer.write_eof()
                answer = await asyncio.wait_for(reader.read(), 5.0)   # EOF: the shell closed on us
                writer.close()
                return answer
            assert await send(struct.pack("!I", 0xFFFFFFFF) + b"x" * 100) == b""
            assert await send(struct.pack("!I", 100) + b"short") == b""
            assert await send(struct.pack("!I", 64) + os.urandom(64)) == b""
            sealed_garbage = Keyring([key]).seal(b"not a push-pull frame")
            assert await send(struct.pack("!I", len(sealed_garbage)) + sealed_garbage) == b""
            c = target.counters()
            assert c["tcp_oversize"] == 1
            assert c["tcp_truncated"] == 1
            assert c.get("tcp_unknown_key", 0) + c.get("tcp_bad_tag", 0) + c.get("tcp_version", 0) == 1
            assert c["tcp_garbage"] == 1 and c["stream_errors"] == 1
            # and the member still serves a real push-pull
            late = GossipShell("late", LO, 0, LO, [key], None, None, fast())
            await late.start()
            try:
                assert await late.join([(LO, target.port)]) == 1
            finally:
                await late.stop()
        finally:
            await stop_all(shells)
    asyncio.run(run())


def test_user_messages_are_sent_directly_and_broadcast_to_everyone() -> None:
    async def run() -> None:
        shells, recs = await group(3, [os.urandom(32)])
        try:
            assert shells[0].send_to("n1", b"direct")
            assert not shells[0].send_to("nobody", b"x")
            recs[2].outgoing.append(b"to-all")
            await until(lambda: b"direct" in recs[1].msgs, what="the direct message")
            await until(lambda: b"to-all" in recs[0].msgs or b"to-all" in recs[1].msgs, what="the broadcast")
        finally:
            await stop_all(shells)
    asyncio.run(run())


def test_joining_with_no_answering_seed_is_unavailable() -> None:
    async def run() -> None:
        s = GossipShell("alone", LO, 0, LO, [os.urandom(16)], None, None, fast())
        await s.start()
        probe = socket.socket()
        probe.bind((LO, 0))
        dead_port = probe.getsockname()[1]
        probe.close()
        try:
            with pytest.raises(Unavailable, match=f"gossip join failed: no seed answered \\({LO}:{dead_port}\\)"):
                await s.join([f"{LO}:{dead_port}"])
        finally:
            await s.stop()
    asyncio.run(run())


def test_a_bad_keyring_is_refused_with_the_reason() -> None:
    with pytest.raises(Exception, match="gossip key must be 16, 24 or 32 bytes, not 7"):
        Keyring([b"1234567"])
    with pytest.raises(Exception, match="gossip keyring holds at most 3 keys, not 4"):
        Keyring([os.urandom(16) for _ in range(4)])
    k = os.urandom(16)
    with pytest.raises(Exception, match="gossip primary key is not in the keyring"):
        Keyring([k], primary=os.urandom(16))
    assert Keyring([k]).seal(b"x")[1] == key_label(k)


def test_a_bad_name_port_or_oversized_message_is_refused_with_the_value() -> None:
    with pytest.raises(Exception, match="invalid gossip name '': 1 to 255 bytes"):
        GossipShell("", LO, 0, LO, [os.urandom(16)], None, None)
    with pytest.raises(Exception, match="invalid gossip port 70000"):
        GossipShell("a", LO, 70000, LO, [os.urandom(16)], None, None)

    async def run() -> None:
        s = GossipShell("a", LO, 0, LO, [os.urandom(16)], None, None, fast())
        await s.start()
        try:
            with pytest.raises(Exception, match="gossip message of 65001 bytes exceeds 65000"):
                s.send_to("b", bytes(65001))
        finally:
            await s.stop()
    asyncio.run(run())
