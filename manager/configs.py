"""Configs and secrets on a manager (swarmkit's controlapi config.go / secret.go): create, get by id or name or id
prefix, list with filters, update labels, remove. Used by the gRPC control API (controlapi.py) and the local API."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from common.errdefs import InvalidParameter, NotFound, Unavailable
from manager.raft.core import RaftError
from manager.raftnode import RaftManager
from manager.secretbox import open_sealed, seal
from manager.store.validate import config_spec_error, secret_data_error, secret_name_error
from proto import objects_pb2 as pb

_ID_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    """A random 128-bit id in base 36, 25 characters (the shape of swarmkit's identity.NewID)."""
    n = int.from_bytes(os.urandom(16), "big")
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_ID_DIGITS[r])
    return "".join(reversed(out)).rjust(25, "0")


def lookup(objects: list[Any], ref: str, kind: str) -> Any:
    """docker's order: full id, then exact name, then a unique id prefix."""
    for o in objects:
        if o.id == ref:
            return o
    named = [o for o in objects if o.spec.annotations.name == ref]
    if len(named) == 1:
        return named[0]
    prefixed = [o for o in objects if o.id.startswith(ref)] if ref else []
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1 or len(named) > 1:
        raise InvalidParameter(f"{kind} {ref} is ambiguous ({len(prefixed) or len(named)} matches found)")
    raise NotFound(f"{kind} {ref} not found")


def matches(obj: Any, names: list[str], name_prefixes: list[str], id_prefixes: list[str], labels: dict[str, str]) -> bool:
    """Any of names / name prefixes / id prefixes (OR, like swarmkit), then every label must match."""
    name = obj.spec.annotations.name
    alternatives = [*(name == n for n in names), *(name.startswith(p) for p in name_prefixes),
                    *(obj.id.startswith(p) for p in id_prefixes)]
    if alternatives and not any(alternatives):
        return False
    have = obj.spec.annotations.labels
    return all(k in have and (v == "" or have[k] == v) for k, v in labels.items())


class _Ops:
    kind = ""

    def __init__(self, raft: RaftManager) -> None:
        self.raft = raft

    async def _read(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return await self.raft.read(fn)
        except RaftError as e:
            raise Unavailable(f"rpc error: code = Unavailable desc = {e}") from None

    async def _propose(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return await self.raft.propose(fn)
        except RaftError as e:
            raise Unavailable(f"rpc error: code = Unavailable desc = {e}") from None

    async def list(self) -> list[Any]:
        objs = await self._read(lambda v: v.list(self.kind))
        return sorted(objs, key=lambda o: (o.spec.annotations.name, o.id))

    async def get(self, ref: str) -> Any:
        return lookup(await self.list(), ref, self.kind)

    async def _create(self, obj: Any) -> Any:
        await self._propose(lambda tx: tx.create(self.kind, obj))
        # propose() returns once applied here: this node's view has it, with its version
        return self.raft.store.view().get(self.kind, obj.id) or obj

    async def update_labels(self, ref: str, version: int, name: str, labels: dict[str, str]) -> Any:
        """Only labels may change (swarmkit: 'only updates to Labels are allowed')."""
        current = await self.get(ref)
        if name != current.spec.annotations.name:
            raise InvalidParameter("only updates to Labels are allowed")
        updated = type(current)()
        updated.CopyFrom(current)
        updated.meta.version.index = version
        updated.spec.annotations.ClearField("labels")
        updated.spec.annotations.labels.update(labels)
        await self._propose(lambda tx: tx.update(self.kind, updated))
        return self.raft.store.view().get(self.kind, current.id)

    async def remove(self, ref: str) -> None:
        obj = await self.get(ref)
        await self._propose(lambda tx: tx.remove(self.kind, obj.id))


class ConfigOps(_Ops):
    kind = "config"

    async def create(self, spec: pb.ConfigSpec) -> pb.Config:
        err = config_spec_error(spec)
        if err is not None:
            raise InvalidParameter(err)
        return await self._create(pb.Config(id=new_id(), spec=spec))


class SecretOps(_Ops):
    """The store holds sealed data only; `key` reads the managers' secrets key (None: this manager has none)."""

    kind = "secret"

    def __init__(self, raft: RaftManager, key: Callable[[], bytes | None]) -> None:
        super().__init__(raft)
        self._key = key

    def key(self) -> bytes:
        k = self._key()
        if k is None:
            raise InvalidParameter("this manager has no secrets key: secrets need a swarm made by this version of shoal")
        return k

    async def create(self, name: str, labels: dict[str, str], data: bytes) -> pb.Secret:
        err = secret_name_error(name) or secret_data_error(len(data))
        if err is not None:
            raise InvalidParameter(err)
        sid = new_id()
        spec = pb.SecretSpec(annotations=pb.Annotations(name=name, labels=labels), data=seal(self.key(), sid, data))
        return await self._create(pb.Secret(id=sid, spec=spec))

    def plaintext(self, secret: pb.Secret) -> bytes:
        """For an agent's assignments only (over mTLS); the API never returns secret data."""
        return open_sealed(self.key(), secret.id, secret.spec.data)
