"""Pure parts of the stdio layer: the shim's json-file writer and rotation, the log reader's
time parsing and queries, detach keys (agent.executor.shim, logfile, stdio)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.executor import logfile
from agent.executor.shim import JsonLog, json_line, parse_size, rfc3339nano
from agent.executor.stdio import DetachScanner, parse_detach_keys


def test_json_line_has_dockers_fields_and_go_time_format() -> None:
    line = json_line(2, b"caf\xc3\xa9 \"x\"\n", 1_700_000_000_120_000_000)
    assert json.loads(line) == {"log": 'café "x"\n', "stream": "stderr", "time": "2023-11-14T22:13:20.12Z"}


def test_rfc3339nano_drops_a_zero_fraction() -> None:
    assert rfc3339nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"


def test_log_splits_output_into_lines_and_keeps_a_partial_line_until_flush(tmp_path: Path) -> None:
    log = JsonLog(str(tmp_path / "c-json.log"))
    log.write(1, b"one\ntw")
    log.write(2, b"err\n")
    log.write(1, b"o\nthree")
    log.flush()
    entries = [json.loads(x) for x in (tmp_path / "c-json.log").read_text().splitlines()]
    assert [(e["log"], e["stream"]) for e in entries] == [
        ("one\n", "stdout"), ("err\n", "stderr"), ("two\n", "stdout"), ("three", "stdout")]


def test_log_rotates_at_max_size_keeping_max_file_files(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    log = JsonLog(str(path), max_size=200, max_file=3)
    for i in range(40):
        log.write(1, f"line {i:02d}\n".encode())
    files = logfile.log_files(path)
    assert [p.name for p in files] == ["c-json.log.2", "c-json.log.1", "c-json.log"]
    assert all(p.stat().st_size <= 200 + 100 for p in files)
    lines = [json.loads(x)["log"] for p in files for x in p.read_text().splitlines()]
    assert lines == [f"line {i:02d}\n" for i in range(40 - len(lines), 40)]


def test_parse_size_reads_docker_units() -> None:
    assert (parse_size("10k"), parse_size("1m"), parse_size("2g"), parse_size("")) == (10240, 1 << 20, 2 << 30, -1)


def test_parse_size_names_a_bad_value() -> None:
    with pytest.raises(ValueError, match="invalid size: 'lots'"):
        parse_size("lots")


def test_parse_time_ns_reads_go_rfc3339nano() -> None:
    assert logfile.parse_time_ns("2023-11-14T22:13:20.123456789Z") == 1_700_000_000_123_456_789
    assert logfile.parse_time_ns("2023-11-14T23:13:20+01:00") == 1_700_000_000_000_000_000


def test_timestamps_prefix_has_nine_digits() -> None:
    assert logfile.format_time_fixed(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.120000000Z"


def test_parse_unix_time_names_a_bad_value() -> None:
    assert logfile.parse_unix_time("1700000000.5", "since") == 1_700_000_000_500_000_000
    with pytest.raises(ValueError, match="invalid value for \"since\": 'yesterday'"):
        logfile.parse_unix_time("yesterday", "since")


def _read(path: Path, query: logfile.Query) -> list[tuple[int, bytes]]:
    async def collect() -> list[tuple[int, bytes]]:
        return [item async for item in logfile.read_log(path, query)]

    return asyncio.run(collect())


def _write_entries(path: Path) -> None:
    path.write_bytes(b"".join(json_line(s, d, t) for s, d, t in [
        (1, b"a\n", 1_000_000_000), (2, b"b\n", 2_000_000_000), (1, b"c\n", 3_000_000_000)]))


def test_tail_counts_lines_of_both_streams(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    _write_entries(path)
    assert _read(path, logfile.Query(tail=2)) == [(2, b"b\n"), (1, b"c\n")]
    assert _read(path, logfile.Query(tail=0)) == []


def test_since_and_until_bound_the_entries(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    _write_entries(path)
    assert _read(path, logfile.Query(since_ns=2_000_000_000, until_ns=2_500_000_000)) == [(2, b"b\n")]


def test_stream_filter_and_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    _write_entries(path)
    assert _read(path, logfile.Query(stderr=False, timestamps=True)) == [
        (1, b"1970-01-01T00:00:01.000000000Z a\n"), (1, b"1970-01-01T00:00:03.000000000Z c\n")]


def test_detach_keys_default_and_custom() -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-x,a") == b"\x18a"


def test_detach_keys_refuses_an_unknown_key_by_name() -> None:
    with pytest.raises(ValueError, match="unknown character 'ctrl-1'"):
        parse_detach_keys("ctrl-1")


def test_detach_scanner_passes_a_broken_prefix_and_stops_at_the_sequence() -> None:
    scanner = DetachScanner(b"\x10\x11")
    assert scanner.feed(b"ab\x10") == (b"ab", False)
    assert scanner.feed(b"c\x10") == (b"\x10c", False)
    assert scanner.feed(b"\x11rest") == (b"", True)


def test_tail_reads_back_across_rotated_files_and_block_edges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logfile, "CHUNK", 100)  # many blocks, lines cut at block edges
    path = tmp_path / "c-json.log"
    log = JsonLog(str(path), max_size=500, max_file=4)
    for i in range(30):
        log.write(1, f"l{i}\n".encode())
    assert _read(path, logfile.Query(tail=3)) == [(1, b"l27\n"), (1, b"l28\n"), (1, b"l29\n")]
    kept = [d for _, d in _read(path, logfile.Query())]
    assert kept == [f"l{i}\n".encode() for i in range(30 - len(kept), 30)]
    assert [d for _, d in _read(path, logfile.Query(tail=len(kept) + 10))] == kept


def test_a_follow_sends_the_last_lines_of_a_log_removed_with_its_container(tmp_path: Path) -> None:
    # docker-py's containers.run(remove=True) removes the container (and its log) before it reads the follow
    # stream it opened: the lines written before the exit still go out
    path = tmp_path / "c-json.log"
    path.write_bytes(json_line(1, b"first\n", 1))
    state = {"running": True}

    async def follow() -> list[bytes]:
        stream = logfile.read_log(path, logfile.Query(), follow=True, running=lambda: state["running"])
        got = [(await stream.__anext__())[1]]
        with open(path, "ab") as f:
            f.write(json_line(1, b"last\n", 2))
        path.unlink()  # the container removed ...
        state["running"] = False  # ... after it exited
        got += [chunk async for _, chunk in stream]
        return got

    assert asyncio.run(follow()) == [b"first\n", b"last\n"]
