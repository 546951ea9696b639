"""The limit flags of `run`/`update` (--memory, --cpus, --pids-limit, ...) parsed as the docker CLI does, without click.
shoal.cli.resources makes click options of them; shoal.cli.fast takes them on its click-free `run` path."""
from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: typing costs ~3 ms of CLI start-up
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """go-units RAMInBytes: "16m", "1.5g", "1024" (binary units; b/k/m/g/t/p, optional "b"/"ib")."""
    from decimal import Decimal, InvalidOperation  # here: `shoal ps` imports this module too

    s = text.strip().lower()
    for suffix in ("ib", "b"):
        if s.endswith(suffix) and len(s) > len(suffix) and s[-len(suffix) - 1] in _UNITS:
            s = s[: -len(suffix)]
            break
    unit = 1
    if s and s[-1] in _UNITS:
        unit, s = _UNITS[s[-1]], s[:-1]
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"invalid size: '{text}'") from None
    if value < 0 or not value.is_finite():
        raise ValueError(f"invalid size: '{text}'")
    return int(value * unit)


def nano_cpus(text: str) -> int:
    """docker's opts.NanoCPUs: "0.5" → 500000000."""
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"failed to parse {text} as a rational number") from None
    nano = value * 1_000_000_000
    if not nano.is_finite() or nano != nano.to_integral_value():
        raise ValueError("value is too precise")
    return int(nano)


def swap_bytes(text: str) -> int:
    return -1 if text.strip() == "-1" else ram_in_bytes(text)


def integer(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax') from None


def text_value(text: str) -> str:
    return text


# flag names -> (parameter, parser, HostConfig field, help)
FLAGS: list[tuple[tuple[str, ...], str, Callable[[str], Any], str, str]] = [
    (("-m", "--memory"), "memory", ram_in_bytes, "Memory", "Memory limit"),
    (("--memory-swap",), "memory_swap", swap_bytes, "MemorySwap",
     "Swap limit equal to memory plus swap: '-1' to enable unlimited swap"),
    (("--memory-reservation",), "memory_reservation", ram_in_bytes, "MemoryReservation", "Memory soft limit"),
    (("--cpus",), "cpus", nano_cpus, "NanoCpus", "Number of CPUs"),
    (("-c", "--cpu-shares"), "cpu_shares", integer, "CpuShares", "CPU shares (relative weight)"),
    (("--cpu-period",), "cpu_period", integer, "CpuPeriod", "Limit CPU CFS (Completely Fair Scheduler) period"),
    (("--cpu-quota",), "cpu_quota", integer, "CpuQuota", "Limit CPU CFS (Completely Fair Scheduler) quota"),
    (("--cpuset-cpus",), "cpuset_cpus", text_value, "CpusetCpus", "CPUs in which to allow execution (0-3, 0,1)"),
    (("--cpuset-mems",), "cpuset_mems", text_value, "CpusetMems", "MEMs in which to allow execution (0-3, 0,1)"),
    (("--pids-limit",), "pids_limit", integer, "PidsLimit", "Tune container pids limit (set -1 for unlimited)"),
]
PARAMS = tuple(f[1] for f in FLAGS)


def host_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The HostConfig fields of the limit flags given (already parsed); unset ones left out."""
    return {field: values[param] for _, param, _, field, _ in FLAGS if values.get(param) is not None}


def parse_texts(values: Mapping[str, list[str]]) -> dict[str, Any]:
    """The HostConfig fields of raw flag values (the last of each wins, as pflag does);
    ValueError('invalid argument "X" for "--flag" flag: ...') as the docker CLI words it."""
    parsed: dict[str, Any] = {}
    for names, param, parse, _, _ in FLAGS:
        texts = values.get(param) or []
        if texts:
            try:
                parsed[param] = parse(texts[-1])
            except ValueError as exc:
                raise ValueError(f'invalid argument "{texts[-1]}" for "{", ".join(names)}" flag: {exc}') from None
    return host_config(parsed)
