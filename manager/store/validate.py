"""What the store accepts, checked inside every transaction: at prepare() on the proposing manager and
again at apply() on every replica, so an entry that reaches the log by any path cannot create a bad object.
Used by tx.py (create/update/remove); the control API relies on it too (swarmkit's wordings for configs)."""

from __future__ import annotations

import re
from typing import Any, Protocol

from google.protobuf.message import Message

from . import errors

MAX_CONFIG_SIZE = 1000 * 1024  # swarmkit controlapi MaxConfigSize (1000 KiB)
MAX_SECRET_SIZE = 500 * 1024  # swarmkit's MaxSecretSize (500 KiB), of the plaintext
SECRET_SEAL_OVERHEAD = 1 + 12 + 16  # manager/secretbox.py: version byte, nonce, GCM tag
_CONFIG_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$")  # swarmkit's config/secret names
_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
MAX_NAME = 64  # networks, services, nodes, clusters (swarmkit's limit for config names)
MAX_TASK_NAME = 256  # <service>.<slot>.<task id>
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Lookup(Protocol):
    def get(self, kind: str, object_id: str) -> Message | None: ...
    def exists(self, kind: str, object_id: str) -> bool: ...
    def list(self, kind: str) -> list[Message]: ...


def config_spec_error(spec: Any) -> str | None:
    """swarmkit's validateConfigSpec, same wording; None when the spec is valid."""
    name = spec.annotations.name
    if name == "":
        return "name must be provided"
    if len(name) > 64 or not _CONFIG_NAME.match(name):
        return "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]"
    if len(spec.data) >= MAX_CONFIG_SIZE or len(spec.data) < 1:
        return f"config data must be larger than 0 and less than {MAX_CONFIG_SIZE} bytes"
    return None


def secret_name_error(name: str) -> str | None:
    """swarmkit's validateSecretSpec name rules (the same as configs')."""
    if name == "":
        return "name must be provided"
    if len(name) > 64 or not _CONFIG_NAME.match(name):
        return "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]"
    return None


def secret_data_error(plaintext_len: int) -> str | None:
    if plaintext_len >= MAX_SECRET_SIZE or plaintext_len < 1:
        return f"secret data must be larger than 0 and less than {MAX_SECRET_SIZE} bytes"
    return None


def check_write(kind: str, obj: Any, tx: Lookup) -> None:
    """Refuse (StoreError INVALID_ARGUMENT / NOT_FOUND) an object that must not be stored as `kind`."""
    if not _ID.match(obj.id):
        raise errors.invalid(f"invalid {kind} id {obj.id!r}: 1 to 64 characters [a-zA-Z0-9_.-], starting with a letter or digit")
    if kind == "config":
        err = config_spec_error(obj.spec)
        if err is not None:
            raise errors.invalid(err)
        return
    if kind == "secret":  # the store sees ciphertext only: its size is the plaintext's plus the seal
        err = secret_name_error(obj.spec.annotations.name) or secret_data_error(len(obj.spec.data) - SECRET_SEAL_OVERHEAD)
        if err is not None:
            raise errors.invalid(err)
        return
    name = obj.annotations.name if kind == "task" else obj.spec.annotations.name
    limit = MAX_TASK_NAME if kind == "task" else MAX_NAME
    if len(name) > limit or _CONTROL.search(name):
        raise errors.invalid(f"invalid {kind} name {name!r}: at most {limit} characters, no control characters")
    if kind == "service":
        for ref in obj.spec.task.container.configs:
            if not tx.exists("config", ref.config_id):
                raise errors.invalid(f"config {ref.config_id} not found")
        for sref in obj.spec.task.container.secrets:
            if not tx.exists("secret", sref.secret_id):
                raise errors.invalid(f"secret {sref.secret_id} not found")
    elif kind == "task":
        # only a new task needs its service: a removed service's tasks are still updated (stopped) and reaped
        if obj.service_id and not tx.exists("service", obj.service_id) and not tx.exists("task", obj.id):
            raise errors.invalid(f"service {obj.service_id} not found")


def check_remove(kind: str, object_id: str, name: str, tx: Lookup) -> None:
    """A config or secret still used by a service stays (swarmkit's RemoveConfig/RemoveSecret wording)."""
    if kind not in ("config", "secret"):
        return
    def refs(s: Any) -> Any:
        c = s.spec.task.container
        return [r.config_id for r in c.configs] if kind == "config" else [r.secret_id for r in c.secrets]
    users = sorted(s.spec.annotations.name for s in tx.list("service") if object_id in refs(s))
    if users:
        plural = "services" if len(users) > 1 else "service"
        raise errors.invalid(f"{kind} '{name}' is in use by the following {plural}: {', '.join(users)}")
