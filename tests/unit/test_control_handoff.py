"""The control API hand-off between front-end processes and the raft process (manager/handoff.py): framing,
batching, dispatch to the servicer and the statuses a front-end relays. Pure: in-memory transports, no sockets."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from manager.handoff import HEADER, METHODS, Aborted, FrontSide, RaftSide, status_code
from proto import control_pb2


class Wire:
    """An asyncio transport that records what was written (one entry per write() call)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        length, call_id, tag = HEADER.unpack_from(data, pos)
        out.append((call_id, tag, data[pos + HEADER.size : pos + HEADER.size + length]))
        pos += HEADER.size + length
    return out


def frame(call_id: int, tag: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), call_id, tag) + body


class Servicer:
    async def Status(self, request: control_pb2.StatusRequest, context: object) -> control_pb2.StatusResponse:
        return control_pb2.StatusResponse(node_id=7, role="leader")

    async def GetConfig(self, request: control_pb2.GetConfigRequest, context: object) -> control_pb2.GetConfigResponse:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"config {request.config_id} not found")  # type: ignore[attr-defined]
        raise AssertionError("unreachable")

    async def RemoveConfig(self, request: control_pb2.RemoveConfigRequest, context: object) -> control_pb2.RemoveConfigResponse:
        raise KeyError("a bug")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_calls_split_across_reads_are_answered_in_one_write() -> None:
    async def go() -> list[bytes]:
        side = RaftSide(Servicer())
        wire = Wire()
        side.connection_made(wire)  # type: ignore[arg-type]
        data = frame(1, METHODS.index("Status"), b"") + frame(2, METHODS.index("Status"), b"")
        side.data_received(data[:5])
        side.data_received(data[5:13])
        side.data_received(data[13:])
        for _ in range(5):
            await asyncio.sleep(0)
        return wire.writes

    writes = run(go())
    assert len(writes) == 1
    answers = frames(writes[0])
    assert [(c, s) for c, s, _b in answers] == [(1, 0), (2, 0)]
    assert control_pb2.StatusResponse.FromString(answers[0][2]) == control_pb2.StatusResponse(node_id=7, role="leader")


def test_an_abort_travels_as_its_status_and_details() -> None:
    async def go() -> list[bytes]:
        side = RaftSide(Servicer())
        wire = Wire()
        side.connection_made(wire)  # type: ignore[arg-type]
        side.data_received(frame(9, METHODS.index("GetConfig"), control_pb2.GetConfigRequest(config_id="nope").SerializeToString()))
        for _ in range(5):
            await asyncio.sleep(0)
        return wire.writes

    [(call_id, status, body)] = frames(run(go())[0])
    assert (call_id, status_code(status), body) == (9, grpc.StatusCode.NOT_FOUND, b"config nope not found")


def test_a_servicer_bug_is_answered_unknown() -> None:
    async def go() -> list[bytes]:
        side = RaftSide(Servicer())
        wire = Wire()
        side.connection_made(wire)  # type: ignore[arg-type]
        side.data_received(frame(3, METHODS.index("RemoveConfig"), b""))
        for _ in range(5):
            await asyncio.sleep(0)
        return wire.writes

    [(call_id, status, body)] = frames(run(go())[0])
    assert (call_id, status_code(status), body) == (3, grpc.StatusCode.UNKNOWN, b"Unexpected KeyError: 'a bug'")


def test_an_unknown_method_number_is_unimplemented() -> None:
    async def go() -> list[bytes]:
        side = RaftSide(Servicer())
        wire = Wire()
        side.connection_made(wire)  # type: ignore[arg-type]
        side.data_received(frame(4, 200, b""))
        await asyncio.sleep(0)
        return wire.writes

    [(call_id, status, body)] = frames(run(go())[0])
    assert (call_id, status_code(status), body) == (4, grpc.StatusCode.UNIMPLEMENTED, b"unknown control method 200")


def test_an_oversized_frame_closes_the_connection() -> None:
    async def go() -> Wire:
        side = RaftSide(Servicer())
        wire = Wire()
        side.connection_made(wire)  # type: ignore[arg-type]
        side.data_received(HEADER.pack(64 << 20, 1, 0))
        return wire

    wire = run(go())
    assert wire.closed and wire.writes == []


def test_front_side_matches_answers_to_calls_by_id() -> None:
    async def go() -> tuple[list[tuple[int, bytes]], list[bytes]]:
        link = FrontSide()
        wire = Wire()
        link.connection_made(wire)  # type: ignore[arg-type]
        a = asyncio.ensure_future(link.call(METHODS.index("Status"), b"a"))
        b = asyncio.ensure_future(link.call(METHODS.index("Status"), b"b"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        sent = frames(b"".join(wire.writes))
        # answered in the other order
        link.data_received(frame(sent[1][0], 0, b"for b") + frame(sent[0][0], 5, b"no a"))
        return [await a, await b], wire.writes

    answers, writes = run(go())
    assert answers == [(5, b"no a"), (0, b"for b")]
    assert len(writes) == 1  # both calls left in one write


def test_front_side_calls_fail_unavailable_when_the_raft_process_goes() -> None:
    async def go() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        link = FrontSide()
        link.connection_made(Wire())  # type: ignore[arg-type]
        pending = asyncio.ensure_future(link.call(0, b""))
        await asyncio.sleep(0)
        link.connection_lost(None)
        return await pending, await link.call(0, b"")

    first, later = run(go())
    assert first == later == (grpc.StatusCode.UNAVAILABLE.value[0], b"manager raft process gone")


def test_every_unary_control_method_can_be_handed_over() -> None:
    assert METHODS == ["CreateConfig", "CreateNetwork", "GetConfig", "GetNetwork", "ListConfigs", "ListNetworks",
                       "RemoveConfig", "RemoveNetwork", "Status"]


def test_aborted_carries_code_and_details() -> None:
    e = Aborted(grpc.StatusCode.ALREADY_EXISTS, "config x already exists")
    assert (e.code, e.details, str(e)) == (grpc.StatusCode.ALREADY_EXISTS, "config x already exists", "config x already exists")


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_status_numbers_map_back_to_codes(code: grpc.StatusCode) -> None:
    assert status_code(code.value[0]) is code
