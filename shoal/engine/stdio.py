"""A container's stdio and log options from its create body (Tty, OpenStdin, StdinOnce,
ConsoleSize, LogConfig json-file max-size/max-file): checked at create, handed to the shim at start.

Pure; called by shoal.api.create_fields (checks) and shoal.engine.engine (start).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.executor.shim import parse_size
from agent.executor.stdio import StdioOptions
from common.errdefs import InvalidParameter

LOG_OPTS = ("max-size", "max-file")


def _ci(data: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    if not isinstance(data, Mapping):
        return default
    lowered = key.lower()
    for k, v in data.items():
        if k.lower() == lowered and v is not None:
            return v
    return default


def log_options(host_config: Mapping[str, Any] | None) -> tuple[int, int]:
    """(max size in bytes or -1, max files) of LogConfig; InvalidParameter with Docker's words."""
    config = _ci(host_config, "LogConfig") or {}
    if not isinstance(config, Mapping):
        raise InvalidParameter("invalid JSON: LogConfig must be an object")
    kind = _ci(config, "Type", "") or "json-file"
    if kind != "json-file":
        raise InvalidParameter(f"shoal supports only the json-file logging driver (got {kind!r})")
    opts = _ci(config, "Config") or {}
    if not isinstance(opts, Mapping):
        raise InvalidParameter("invalid JSON: LogConfig.Config must be an object")
    for key in opts:
        if key not in LOG_OPTS:
            raise InvalidParameter(f"unknown log opt '{key}' for json-file log driver")
    try:
        max_size = parse_size(str(opts.get("max-size", "")))
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None
    max_file = 1
    if "max-file" in opts:
        text = str(opts["max-file"])
        if not text.lstrip("-").isdigit():
            raise InvalidParameter(f'strconv.Atoi: parsing "{text}": invalid syntax')
        max_file = int(text)
        if max_file < 1:
            raise InvalidParameter("max-file cannot be less than 1")
        if max_file > 1 and max_size < 0:
            raise InvalidParameter("max-file cannot be set without max-size")
    return max_size, max_file


def stdio_options(create_config: Mapping[str, Any], host_config: Mapping[str, Any], tty: bool) -> StdioOptions:
    """What the shim needs for this container (the bodies were checked at create)."""
    max_size, max_file = log_options(host_config)
    size = _ci(host_config, "ConsoleSize")
    console = None
    if isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) and x > 0 for x in size):
        console = (size[0], size[1])
    return StdioOptions(
        tty=tty,
        open_stdin=bool(_ci(create_config, "OpenStdin", False)),
        stdin_once=bool(_ci(create_config, "StdinOnce", False)),
        log_max_size=max_size,
        log_max_file=max_file,
        console_size=console,
    )
