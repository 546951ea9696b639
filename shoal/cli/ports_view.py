"""`shoal port CONTAINER [PRIVATE_PORT[/PROTO]]`: the published ports from inspect's NetworkSettings.Ports, printed
and ordered as the docker CLI's `port` (cli/command/container/port.go). Pure."""

from __future__ import annotations

from typing import Any

from shoal.cli.format import natural_key

_MAX_PORT = 65535


def join_host_port(host: str, port: str) -> str:
    """Go's net.JoinHostPort: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_uint16(port: str) -> None:
    """strconv.ParseUint(port, 10, 16), with its words."""
    if not port.isascii() or not port.isdigit():
        raise ValueError(f'Error: invalid port ({port}): strconv.ParseUint: parsing "{port}": invalid syntax')
    if len(port.lstrip("0")) > len(str(_MAX_PORT)) or int(port) > _MAX_PORT:
        raise ValueError(f'Error: invalid port ({port}): strconv.ParseUint: parsing "{port}": value out of range')


def port_lines(inspect: dict[str, Any], private_port: str | None, container: str) -> list[str]:
    ports = ((inspect.get("NetworkSettings") or {}).get("Ports")) or {}
    if private_port:
        port, _, proto = private_port.partition("/")
        _parse_uint16(port)
        frontends = ports.get(f"{port}/{proto or 'tcp'}") or []
        if not frontends:
            raise ValueError(f"Error: No public port '{private_port}' published for {container}")
        out = [join_host_port(f.get("HostIp", ""), f.get("HostPort", "")) for f in frontends]
    else:
        out = [f"{private} -> {join_host_port(f.get('HostIp', ''), f.get('HostPort', ''))}"
               for private, frontends in ports.items() for f in frontends or []]
    return sorted(out, key=natural_key)
