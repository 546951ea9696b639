"""Pure helpers of the engine: environment merging, users, signals, log tails, list filters.

No I/O except reading a container's /etc/passwd and /etc/group for --user and --group-add
(agent.executor.rootfs, in a thread); used by engine.py and sandbox.py.
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
from agent.executor.spec import process_user_in
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


def _user_files_or_why(rootfs: Path) -> tuple[str, str, str, str]:
    """passwd and group texts, each with why it could not be read ("" when it could, or is absent)."""
    out: list[str] = []
    for path in ("/etc/passwd", "/etc/group"):
        try:
            out += [(read_in_root(rootfs, path) or b"").decode(errors="replace"), ""]
        except RootfsReadError as exc:
            out += ["", exc.message]
    return out[0], out[2], out[1], out[3]


ProcessUser = tuple[int, int, tuple[int, ...]]  # uid, gid, additional gids (agent.executor.spec.process_user_in)


async def process_user(user: str, group_add: list[str], rootfs: Path) -> ProcessUser:
    """--user and --group-add as moby resolves them (getUser), in the container's /etc/passwd and /etc/group.
    A file that cannot be read refuses a --user (naming the user and why) and a --group-add name; without them it
    is absent, as for moby.

    The files belong to the container: read in a thread (never on the event loop) and only inside its root, so a
    FIFO, a symlink to a host file or a huge file cannot hang the daemon or show it anything of the host."""
    passwd, group, passwd_why, group_why = await asyncio.to_thread(_user_files_or_why, rootfs)
    if user and (passwd_why or group_why):
        raise InvalidParameter(f"unable to find user {user}: {passwd_why or group_why}")
    try:
        return process_user_in(user, group_add, passwd, group, group_why)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None


_IMAGE_USERS: dict[tuple[str, str, tuple[str, ...]], ProcessUser] = {}
_IMAGE_USERS_KEPT = 512


async def image_process_user(user: str, group_add: list[str], image_rootfs: Path) -> ProcessUser:
    """process_user over an image's own root, remembered: that root never changes (it is named by the image's
    digest), so a start pays the thread hop once per image, user and groups, not every time (shoal.engine.startfast)."""
    key = (str(image_rootfs), user, tuple(group_add))
    found = _IMAGE_USERS.get(key)
    if found is None:
        found = await process_user(user, group_add, image_rootfs)  # a refusal is not remembered
        if len(_IMAGE_USERS) >= _IMAGE_USERS_KEPT:
            _IMAGE_USERS.pop(next(iter(_IMAGE_USERS)))
        _IMAGE_USERS[key] = found
    return found


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
