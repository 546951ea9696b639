"""Pure helpers of the engine: environment merging, users, signals, log tails, list filters.

No I/O except reading a container's /etc/passwd and /etc/group for --user (agent.executor.rootfs,
in a thread); used by engine.py and sandbox.py.
"""
from __future__ import annotations

import asyncio
import dataclasses
import signal as signals
from pathlib import Path

from agent.network.controller import NetworkController
from agent.executor.confinement import (
    SECCOMP_UNCONFINED,
    Confinement,
    ConfinementError,
    available_capabilities,
    from_host_config,
)
from agent.executor.rootfs import RootfsReadError, read_in_root
from agent.executor.spec import resolve_user_in
from shoal.engine.errors import EngineError, InvalidParameter
from shoal.engine.records import ContainerRecord
from shoal.engine.health import status_of as health_status_of


def merge_env(base: list[str], overrides: list[str], keep_first: bool = False) -> list[str]:
    """KEY=VALUE lists merged by key; overrides win unless keep_first (then base wins).

    An override without "=" unsets that key, as moby's ReplaceOrAppendEnvValues does (the API
    accepts `"Env": ["NOEQ"]`; a process never sees an entry without "=")."""
    merged: dict[str, str] = {}
    for entry in base:
        key = entry.split("=", 1)[0]
        if "=" in entry:
            merged[key] = entry
    for entry in overrides:
        key = entry.split("=", 1)[0]
        if keep_first and key in merged:
            continue
        if "=" in entry:
            merged[key] = entry
        else:
            merged.pop(key, None)
    return list(merged.values())


def _user_files(rootfs: Path) -> tuple[str, str]:
    """The container's /etc/passwd and /etc/group (absent is empty), read inside its root."""
    texts = []
    for path in ("/etc/passwd", "/etc/group"):
        data = read_in_root(rootfs, path)
        texts.append((data or b"").decode(errors="replace"))
    return texts[0], texts[1]


async def user_ids(user: str, rootfs: Path) -> tuple[int, int]:
    """Docker's --user rules, names resolved in the container's /etc/passwd and /etc/group.

    The files belong to the container: read in a thread (never on the event loop) and only
    inside its root, so a FIFO, a symlink to a host file or a huge file cannot hang the daemon
    or show it anything of the host."""
    if not user:
        return 0, 0
    try:
        passwd, group = await asyncio.to_thread(_user_files, rootfs)
        return resolve_user_in(user, passwd, group)
    except RootfsReadError as exc:
        raise InvalidParameter(f"unable to find user {user}: {exc.message}") from None
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None


def confinement_of(container: ContainerRecord) -> Confinement:
    """Capabilities, seccomp, no-new-privileges and read-only root from the container's
    HostConfig (checked at create; a record from an older shoal may still be refused here)."""
    try:
        confinement = from_host_config(container.host_config)
    except ConfinementError as exc:
        raise InvalidParameter(exc.message) from None
    if any(k.lower() == "privileged" and v is True for k, v in container.host_config.items()):
        # --privileged: every capability the daemon holds and no seccomp filter, as moby
        return dataclasses.replace(confinement, capabilities=available_capabilities(), seccomp=SECCOMP_UNCONFINED)
    return confinement


def parse_signal(value: str) -> signals.Signals:
    text = value.strip().upper()
    try:
        if text.isdigit():
            return signals.Signals(int(text))
        if not text.startswith("SIG"):
            text = "SIG" + text
        return signals.Signals[text]
    except (KeyError, ValueError):
        raise InvalidParameter(f"Invalid signal: {value}") from None


def parse_tail(value: str) -> int:
    try:
        lines = int(value)
    except ValueError:
        raise InvalidParameter(f"invalid value for \"tail\": {value!r}") from None
    return max(lines, 0)


def label_filter(labels: dict[str, str], value: str) -> bool:
    key, _, want = value.partition("=")
    return key in labels and ("=" not in value or labels[key] == want)


def container_matches(container: ContainerRecord, filters: dict[str, list[str]], net: NetworkController) -> bool:
    def any_of(key: str, test) -> bool:
        values = filters.get(key)
        return not values or any(test(v) for v in values)

    def on_network(value: str) -> bool:
        try:
            return net.lookup(value).id in container.endpoints
        except EngineError:
            return False

    return (
        any_of("id", lambda v: container.id.startswith(v))
        and any_of("name", lambda v: v.lstrip("/") in container.name)
        and any_of("status", lambda v: (("paused" if container.paused else "running") if container.state == "running"
                                        else "restarting" if container.restarting else container.state) == v)
        and any_of("ancestor", lambda v: container.image == v or container.image_id.startswith(v))
        and any_of("network", on_network)
        and any_of("exited", lambda v: container.state == "exited" and str(container.exit_code) == v)
        and any_of("health", lambda v: health_status_of(container.health) == v)
        and all(label_filter(container.labels, v) for v in filters.get("label", []))
    )


def unique(names: list[str]) -> list[str]:
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


def exposed_of(container: ContainerRecord) -> list[tuple[int, str]]:
    exposed = container.create_config.get("ExposedPorts") or {}
    ports = []
    for key in exposed:
        port, _, proto = str(key).partition("/")
        if port.isdigit():
            ports.append((int(port), proto or "tcp"))
    return sorted(ports)


def user_env(container: ContainerRecord) -> list[str]:
    """The environment a user gave a container (-e), not the image's."""
    return [e for e in container.create_config.get("Env") or [] if isinstance(e, str)]
