"""Legacy links on the default bridge (S13): the /etc/hosts line and the environment variables
Docker gives a container for each `--link name:alias`.

Pure; agent.network.sandbox (hosts lines) and shoal.engine (environment) call them at start.
"""
from __future__ import annotations

import re

SKIPPED_ENV = ("HOME", "PATH", "HOSTNAME")


def parse_link(spec: str) -> tuple[str, str]:
    """"name:alias" or "name" -> (name, alias)."""
    name, _, alias = spec.partition(":")
    name = name.lstrip("/")
    if not name:
        raise ValueError(f"invalid link specification: {spec!r}")
    return name, alias or name


def env_prefix(alias: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", alias).upper()


def link_env(
    alias: str,
    own_name: str,
    linked_ip: str,
    exposed: list[tuple[int, str]],
    linked_env: list[str],
) -> list[str]:
    """Docker's <ALIAS>_NAME, <ALIAS>_PORT, <ALIAS>_PORT_<P>_<PROTO>[_ADDR|_PORT|_PROTO] and
    <ALIAS>_ENV_<K> variables, in that order."""
    prefix = env_prefix(alias)
    env = [f"{prefix}_NAME=/{own_name}/{alias}"]
    ports = sorted(exposed)
    if ports:
        port, proto = ports[0]
        env.append(f"{prefix}_PORT={proto}://{linked_ip}:{port}")
    for port, proto in ports:
        base = f"{prefix}_PORT_{port}_{proto.upper()}"
        env += [
            f"{base}={proto}://{linked_ip}:{port}",
            f"{base}_ADDR={linked_ip}",
            f"{base}_PORT={port}",
            f"{base}_PROTO={proto}",
        ]
    for entry in linked_env:
        key, _, value = entry.partition("=")
        if key and key not in SKIPPED_ENV:
            env.append(f"{prefix}_ENV_{key}={value}")
    return env


def hosts_entry(linked_ip: str, alias: str, linked_id: str, linked_name: str) -> tuple[str, list[str]]:
    """The /etc/hosts line for a link: the alias, the short id and the name."""
    names = [alias]
    for extra in (linked_id[:12], linked_name):
        if extra not in names:
            names.append(extra)
    return linked_ip, names
