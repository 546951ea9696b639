"""Docker's container health checks, the pure part: config merge and validation, probe argv, result
handling (status, failing streak, log), the wait before the next probe, Go's duration text.

No clock and no I/O: times come in as arguments. shoal.engine.healthmon runs the probes with it;
shoal.api.params validates create bodies with it. Follows moby's daemon/health.go.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errdefs import InvalidParameter
from common.timefmt import rfc3339_from_ns

NANOS = 1_000_000_000
MIN_DURATION_NS = 1_000_000  # moby's containertypes.MinimumDuration (1 ms)

DEFAULT_INTERVAL_NS = 30 * NANOS
DEFAULT_TIMEOUT_NS = 30 * NANOS
DEFAULT_START_PERIOD_NS = 0
DEFAULT_START_INTERVAL_NS = 5 * NANOS
DEFAULT_RETRIES = 3

MAX_LOG_ENTRIES = 5
MAX_OUTPUT_LEN = 4096

STARTING, HEALTHY, UNHEALTHY, NO_HEALTHCHECK = "starting", "healthy", "unhealthy", "none"
FILTER_VALUES = (STARTING, HEALTHY, UNHEALTHY, NO_HEALTHCHECK)

_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")
_DURATIONS = ("Interval", "Timeout", "StartPeriod", "StartInterval")


def _get(data: Mapping[str, Any], key: str) -> Any:
    """Docker's JSON decoding matches field names case-insensitively."""
    if key in data:
        return data[key]
    return next((v for k, v in data.items() if k.lower() == key.lower()), None)


def normalized(healthcheck: Any) -> dict[str, Any] | None:
    """A Healthcheck object in Docker's spelling with every field present (zero when absent);
    None for null. InvalidParameter with Go's decoding words for a wrong type."""
    if healthcheck is None:
        return None
    if not isinstance(healthcheck, dict):
        raise InvalidParameter("json: cannot unmarshal into Go struct field Config.Healthcheck of type container.HealthConfig")
    out: dict[str, Any] = {}
    test = _get(healthcheck, "Test")
    if test is not None and (not isinstance(test, list) or not all(isinstance(t, str) for t in test)):
        raise InvalidParameter("json: cannot unmarshal into Go struct field HealthConfig.Config.Healthcheck.Test of type []string")
    out["Test"] = list(test or [])
    for key in (*_DURATIONS, "Retries"):
        value = _get(healthcheck, key)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int):
            kind = "int" if key == "Retries" else "time.Duration"
            raise InvalidParameter(
                f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                f"HealthConfig.Config.Healthcheck.{key} of type {kind}"
            )
        out[key] = value
    return out


def validate(healthcheck: Any) -> None:
    """moby's validateHealthCheck (daemon/container.go): a non-zero duration below 1 ms, or
    negative retries, refuses the create."""
    config = normalized(healthcheck)
    if config is None:
        return
    for key in _DURATIONS:
        if config[key] != 0 and config[key] < MIN_DURATION_NS:
            raise InvalidParameter(f"{key} in Healthcheck cannot be less than 1ms")
    if config["Retries"] < 0:
        raise InvalidParameter("Retries in Healthcheck cannot be negative")


def merge(create: Any, image: Any) -> dict[str, Any] | None:
    """moby's image merge (daemon/commit.go merge): no Healthcheck in the create takes the image's;
    an empty Test takes the image's Test, each zero duration or retries the image's value."""
    user = normalized(create)
    base = normalized(image) if isinstance(image, dict) else None
    if user is None:
        return base
    if base is None:
        return user
    merged = dict(user)
    if not merged["Test"]:
        merged["Test"] = list(base["Test"])
    for key in (*_DURATIONS, "Retries"):
        if merged[key] == 0:
            merged[key] = base[key]
    return merged


@dataclass(frozen=True, slots=True)
class Probe:
    """What the monitor needs of a container's merged Healthcheck: times in seconds."""

    argv: tuple[str, ...]
    interval: float
    timeout: float
    timeout_ns: int  # for the timeout's message, in Go's words
    start_period: float
    start_interval: float
    retries: int


def probe_of(healthcheck: Mapping[str, Any] | None, shell: list[str] | None = None) -> Probe | None:
    """The probe of a merged Healthcheck; None when there is none to run: no Test, ["NONE"], or a
    kind moby does not know (it logs and runs nothing). shell: the container's Config.Shell."""
    if not healthcheck:
        return None
    test = list(healthcheck.get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        argv = test[1:]
    elif test[0] == "CMD-SHELL":
        argv = list(shell or ["/bin/sh", "-c"]) + test[1:]
    else:
        return None
    if not argv:
        return None

    def seconds(key: str, default: int) -> tuple[float, int]:
        ns = int(healthcheck.get(key) or 0)
        ns = ns if ns > 0 else default
        return ns / NANOS, ns

    timeout, timeout_ns = seconds("Timeout", DEFAULT_TIMEOUT_NS)
    retries = int(healthcheck.get("Retries") or 0)
    return Probe(
        argv=tuple(argv),
        interval=seconds("Interval", DEFAULT_INTERVAL_NS)[0],
        timeout=timeout,
        timeout_ns=timeout_ns,
        start_period=seconds("StartPeriod", DEFAULT_START_PERIOD_NS)[0],
        start_interval=seconds("StartInterval", DEFAULT_START_INTERVAL_NS)[0],
        retries=retries if retries > 0 else DEFAULT_RETRIES,
    )


# ---- results ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Result:
    start_ns: int  # unix nanoseconds
    end_ns: int
    exit_code: int
    output: str

    def to_json(self) -> dict[str, Any]:
        return {"Start": rfc3339_from_ns(self.start_ns), "End": rfc3339_from_ns(self.end_ns),
                "ExitCode": self.exit_code, "Output": self.output}


def initial() -> dict[str, Any]:
    """The Health of a container whose check starts (each start, and a daemon restart)."""
    return {"Status": STARTING, "FailingStreak": 0, "Log": []}


def restarted(health: Mapping[str, Any] | None) -> dict[str, Any]:
    """Back to starting with no failures; the earlier runs' results stay in the log (as moby keeps
    its Health object across starts)."""
    out = initial()
    if health:
        out["Log"] = list(health.get("Log") or [])[-MAX_LOG_ENTRIES:]
    return out


def apply_result(health: Mapping[str, Any], result: Result, probe: Probe, started_at_ns: int) -> dict[str, Any]:
    """moby's handleProbeResult: the new Health after one probe. A failure does not count while
    the container is still starting and the probe began within the start period."""
    log = [*list(health.get("Log") or []), result.to_json()][-MAX_LOG_ENTRIES:]
    status = health.get("Status", STARTING)
    streak = int(health.get("FailingStreak", 0))
    if result.exit_code == 0:
        streak, status = 0, HEALTHY
    else:
        within_start = result.start_ns - started_at_ns < probe.start_period * NANOS
        if not (status == STARTING and within_start):
            streak += 1
            if streak >= probe.retries:
                status = UNHEALTHY
    return {"Status": status, "FailingStreak": streak, "Log": log}


def next_wait(probe: Probe, status: str, since_start: float) -> float:
    """Seconds until the next probe. While the container is still starting within its start
    period the start interval is used, cut to what is left of the period so that the first
    probe that counts is not late; otherwise the interval."""
    left = probe.start_period - since_start
    if left > 0 and status == STARTING:
        return max(min(probe.start_interval, left), 0.0)
    return probe.interval


def limited_output(data: bytes) -> str:
    """moby's limitedBuffer: the first 4096 bytes, "..." after them when there were more."""
    if len(data) > MAX_OUTPUT_LEN:
        return data[:MAX_OUTPUT_LEN].decode(errors="replace") + "..."
    return data.decode(errors="replace")


def timeout_output(timeout_ns: int, output: str) -> str:
    text = f"Health check exceeded timeout ({go_duration(timeout_ns)})"
    return f"{text}: {output}" if output else text


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): "1s", "500ms", "1m30s", "1h0m0s", "1.5s", "0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < NANOS:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    hours, rest = divmod(ns, 3600 * NANOS)
    minutes, rest = divmod(rest, 60 * NANOS)
    text = _fraction(rest, NANOS) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, part = divmod(value, unit)
    if not part:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}." + f"{part:0{digits}d}".rstrip("0")


def status_of(health: Mapping[str, Any] | None) -> str:
    """The `health` filter's value: the status, "none" without a check."""
    return str(health.get("Status")) if health else NO_HEALTHCHECK


def check_filter(values: list[str]) -> None:
    for value in values:
        if value not in FILTER_VALUES:
            raise InvalidParameter(f"Unrecognised filter value for health: {value}")


def status_suffix(health: Mapping[str, Any] | None) -> str:
    """What `docker ps` appends to "Up 3 seconds": " (health: starting)", " (healthy)"."""
    if not health:
        return ""
    status = health.get("Status")
    return " (health: starting)" if status == STARTING else f" ({status})"
