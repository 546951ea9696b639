"""`shoal service logs` formats each line as the docker CLI's service logs (cli/command/service/logs.go)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from shoal.cli.service_logs import LineFormatter, LogFormatError, copy, parse_details

DETAILS = b"com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t0123456789abcdef"
OBJECTS = {("nodes", "n1"): {"Description": {"Hostname": "h2"}}, ("services", "s1"): {"Spec": {"Name": "web"}},
           ("tasks", "t0123456789abcdef"): {"ID": "t0123456789abcdef", "Slot": 3}}


def formatter(timestamps: bool = False, details: bool = False, no_resolve: bool = False, no_trunc: bool = False,
              no_task_ids: bool = False, padding: int = 2) -> LineFormatter:
    return LineFormatter(lambda kind, ref: OBJECTS[(kind, ref)], timestamps, details, no_resolve, no_trunc,
                         no_task_ids, padding)


def test_a_line_gets_the_task_name_node_and_padding_to_the_replicas_width() -> None:
    assert formatter().format(DETAILS + b" hello\n") == b"web.3.t0123456789a@h2     | hello\n"


def test_timestamps_stay_in_front() -> None:
    line = b"2026-12-04T13:00:00.000000000Z " + DETAILS + b" hello\n"
    assert formatter(timestamps=True, padding=1).format(line) == (
        b"2026-12-04T13:00:00.000000000Z web.3.t0123456789a@h2    | hello\n")


def test_no_resolve_no_trunc_and_no_task_ids() -> None:
    assert formatter(no_resolve=True, no_trunc=True, padding=1).format(DETAILS + b" x\n") == (
        b"s1.3.t0123456789abcdef@n1    | x\n")
    assert formatter(no_task_ids=True, padding=1).format(DETAILS + b" x\n") == b"web.3@h2    | x\n"


def test_details_left_after_the_context_are_shown_sorted_with_details() -> None:
    line = DETAILS + b",zone=a,app=b x\n"
    assert formatter(details=True, padding=1).format(line) == b"web.3.t0123456789a@h2    | app=b,zone=a x\n"


def test_details_are_query_unescaped() -> None:
    assert parse_details("a%3Db=c+d,e=%2C") == {"a=b": "c d", "e": ","}


@pytest.mark.parametrize(("line", "message"), [
    (b"nospace\n", "invalid context in log message: nospace\n"),
    (b"com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t x\n",
     "missing node id in details: map[com.docker.swarm.service.id:s1 com.docker.swarm.task.id:t]"),
    (b"novalue x\n", "invalid details format"),
])
def test_a_line_without_its_context_is_refused_with_the_docker_clis_words(line: bytes, message: str) -> None:
    with pytest.raises(LogFormatError) as e:
        formatter().format(line)
    assert str(e.value) == message


def test_frames_go_to_their_streams_each_formatted() -> None:
    def frame(stream: int, payload: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload

    stdout, stderr = io.BytesIO(), io.BytesIO()
    data = frame(1, DETAILS + b" out\n") + frame(2, DETAILS + b" err\n")
    copy([data[:5], data[5:]], stdout, stderr, formatter(padding=1))
    assert (stdout.getvalue(), stderr.getvalue()) == (b"web.3.t0123456789a@h2    | out\n",
                                                      b"web.3.t0123456789a@h2    | err\n")


def test_the_lookups_are_cached_per_context() -> None:
    calls: list[Any] = []

    def lookup(kind: str, ref: str) -> dict[str, Any]:
        calls.append(kind)
        return OBJECTS[(kind, ref)]

    f = LineFormatter(lookup, False, False, False, False, False, 1)
    for _ in range(3):
        f.format(DETAILS + b" x\n")
    assert calls == ["nodes", "services", "tasks"]
