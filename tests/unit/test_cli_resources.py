"""shoal.cli.resources: the limit flags as the docker CLI parses them, and `stats` formatting."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from shoal.cli import limits
from shoal.cli import resources as r
from shoal.cli.runner import create_body

MB = 1024 * 1024


@pytest.mark.parametrize(("text", "value"), [("16m", 16 * MB), ("16M", 16 * MB), ("1.5g", 3 * 512 * MB),
                                             ("1024", 1024), ("512kb", 512 * 1024), ("2MiB", 2 * MB)])
def test_sizes_parse_as_rams_in_bytes(text: str, value: int) -> None:
    assert limits.ram_in_bytes(text) == value


@pytest.mark.parametrize("text", ["abc", "-1m", "m", ""])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        limits.ram_in_bytes(text)


def test_cpus_become_nano_cpus() -> None:
    assert (limits.nano_cpus("0.5"), limits.nano_cpus("2"), limits.nano_cpus("0.001")) == (500_000_000, 2_000_000_000, 1_000_000)
    with pytest.raises(ValueError, match="failed to parse abc as a rational number"):
        limits.nano_cpus("abc")
    with pytest.raises(ValueError, match="value is too precise"):
        limits.nano_cpus("0.0000000001")


def test_limit_flags_become_host_config_fields_and_unset_ones_are_left_out() -> None:
    seen = {}

    @r.limit_options
    def command(**kwargs):
        seen.update(kwargs)

    import click

    CliRunner().invoke(click.command()(command), ["--memory", "16m", "--memory-swap", "-1", "--cpus", "0.5",
                                                  "--pids-limit", "20", "--cpuset-cpus", "0"], catch_exceptions=False)
    assert r.host_config_limits(seen) == {"Memory": 16 * MB, "MemorySwap": -1, "NanoCpus": 500_000_000,
                                          "PidsLimit": 20, "CpusetCpus": "0"}


def test_run_puts_the_limits_into_the_create_bodys_host_config() -> None:
    body = create_body("busybox", ["true"], host_config={"Memory": 16 * MB})
    assert body["HostConfig"]["Memory"] == 16 * MB and body["HostConfig"]["NetworkMode"] == "bridge"


@pytest.mark.parametrize(("size", "text"), [(0, "0B"), (426, "426B"), (1160, "1.16kB"), (2_220_000, "2.22MB")])
def test_human_size_has_three_significant_digits(size: int, text: str) -> None:
    assert r.human_size(size) == text


@pytest.mark.parametrize(("size", "text"), [(300 * 1024, "300KiB"), (16 * MB, "16MiB"), (1.5 * MB, "1.5MiB")])
def test_bytes_size_uses_binary_units(size: float, text: str) -> None:
    assert r.bytes_size(size) == text


STATS = {
    "id": "ab" * 32, "name": "/web",
    "cpu_stats": {"cpu_usage": {"total_usage": 3_000}, "system_cpu_usage": 20_000, "online_cpus": 2},
    "precpu_stats": {"cpu_usage": {"total_usage": 1_000}, "system_cpu_usage": 10_000},
    "memory_stats": {"usage": 2 * MB, "limit": 16 * MB, "stats": {"total_inactive_file": MB}},
    "networks": {"eth0": {"rx_bytes": 1160, "tx_bytes": 426}},
    "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 1000}, {"op": "Write", "value": 0}]},
    "pids_stats": {"current": 3},
}


def test_a_stats_row_is_what_docker_stats_prints() -> None:
    assert r.stats_row(STATS) == ["abababababab", "web", "40.00%", "1MiB / 16MiB", "6.25%", "1.16kB / 426B",
                                  "1kB / 0B", "3"]


def test_a_stopped_container_has_a_row_of_zeros() -> None:
    row = r.stats_row({"id": "ab" * 32, "name": "/web", "memory_stats": {}, "pids_stats": {}})
    assert row == ["abababababab", "web", "0.00%", "0B / 0B", "0.00%", "0B / 0B", "0B / 0B", "0"]


def test_cpu_percent_is_zero_without_a_previous_reading() -> None:
    assert r.cpu_percent({"cpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 9}}) == 0.0


def test_the_fast_path_parses_the_same_flags_and_words_a_bad_value_as_docker() -> None:
    assert limits.parse_texts({"memory": ["8m", "16m"], "cpus": ["0.5"], "pids_limit": ["20"]}) == {
        "Memory": 16 * MB, "NanoCpus": 500_000_000, "PidsLimit": 20}
    with pytest.raises(ValueError) as info:
        limits.parse_texts({"memory": ["abc"]})
    assert str(info.value) == 'invalid argument "abc" for "-m, --memory" flag: invalid size: \'abc\''


def test_a_run_with_limits_takes_the_fast_path() -> None:
    from shoal.cli.fast import parse_fast

    parsed = parse_fast(["run", "-d", "--memory", "16m", "--cpus=0.5", "busybox", "sleep", "1"])
    assert parsed is not None
    _, _, params = parsed
    assert (params["memory"], params["cpus"], params["positional"]) == (["16m"], ["0.5"], ["busybox", "sleep", "1"])
