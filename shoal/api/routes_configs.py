"""Docker's /configs and /secrets endpoints over the manager's ConfigOps/SecretOps (manager/configs.py):
create, list (filters id/name/label), inspect, update (labels only), remove. Secret data is never returned."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from common.errdefs import GRPC_CODE, InvalidParameter, ShoalError
from manager.store.errors import NAME_CONFLICT, StoreError
from shoal.api import params
from shoal.api.routes_swarm import _swarm
from shoal.api.server import add_route, json_response
from shoal.api.swarm_json import _ts

_CAMEL = {code: "".join(p.capitalize() for p in code.split("_")) for code in GRPC_CODE.values()}


def _rpc_error(e: ShoalError, kind: str, name: str) -> ShoalError:
    """A refused write as dockerd relays swarmkit's: `rpc error: code = AlreadyExists desc = config x already exists`."""
    message = f"{kind} {name} already exists" if isinstance(e, StoreError) and e.message == NAME_CONFLICT else e.message
    if message.startswith("rpc error:"):
        return e
    err = ShoalError(f"rpc error: code = {_CAMEL[GRPC_CODE[e.kind]]} desc = {message}")
    err.kind = e.kind
    return err


def _ops(request: web.Request, kind: str) -> Any:
    swarm = _swarm(request)
    swarm.ops()  # refuses a node in no swarm, or a worker, with Docker's 503
    return swarm.manager.configs if kind == "config" else swarm.manager.secrets


def object_json(obj: Any, kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"Name": obj.spec.annotations.name, "Labels": dict(obj.spec.annotations.labels)}
    if kind == "config":
        spec["Data"] = base64.b64encode(obj.spec.data).decode()
    return {"ID": obj.id, "Version": {"Index": obj.meta.version.index}, "CreatedAt": _ts(obj.meta, "created_at"),
            "UpdatedAt": _ts(obj.meta, "updated_at"), "Spec": spec}


def _spec_body(body: Any, kind: str) -> tuple[str, dict[str, str], bytes]:
    if not isinstance(body, dict):
        raise InvalidParameter(f"invalid JSON: {kind} spec must be an object")
    name = body.get("Name") or ""
    labels = body.get("Labels") or {}
    if not isinstance(name, str):
        raise InvalidParameter(f"invalid JSON: Name must be a string, got {name!r}")
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise InvalidParameter(f"invalid JSON: Labels must be an object of strings, got {labels!r}")
    raw = body.get("Data") or ""
    if not isinstance(raw, str):
        raise InvalidParameter(f"invalid JSON: Data must be a base64 string, got {raw!r}")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(f"invalid JSON: Data is not valid base64: {raw[:40]!r}") from None
    return name, labels, data


def _filters(request: web.Request) -> dict[str, list[str]]:
    f = params.parse_filters(request.query.get("filters"))
    for key in f:
        if key not in ("id", "name", "label", "names"):
            raise InvalidParameter(f"invalid filter '{key}'")
    return f


def _routes(kind: str) -> list[tuple[str, str, Any]]:
    plural = kind + "s"

    async def create(request: web.Request) -> web.Response:
        ops = _ops(request, kind)
        name, labels, data = _spec_body(params.parse_json_body(await request.read()), kind)
        try:
            if kind == "config":
                from proto import objects_pb2 as pb
                obj = await ops.create(pb.ConfigSpec(annotations=pb.Annotations(name=name, labels=labels), data=data))
            else:
                obj = await ops.create(name, labels, data)
        except ShoalError as e:
            raise _rpc_error(e, kind, name) from None
        return json_response({"ID": obj.id}, status=201)

    async def listing(request: web.Request) -> web.Response:
        f = _filters(request)
        labels = dict((lv.split("=", 1) + [""])[:2] for lv in f.get("label", []))
        from manager.configs import matches
        objs = [o for o in await _ops(request, kind).list()
                if matches(o, f.get("names", []), f.get("name", []), f.get("id", []), labels)]
        return json_response([object_json(o, kind) for o in objs])

    async def inspect(request: web.Request) -> web.Response:
        return json_response(object_json(await _ops(request, kind).get(request.match_info["id"]), kind))

    async def update(request: web.Request) -> web.Response:
        version = params.int_value(request.query.get("version"), "version")
        if version is None:
            raise InvalidParameter(f"invalid {kind} version")
        name, labels, _ = _spec_body(params.parse_json_body(await request.read()), kind)
        try:
            await _ops(request, kind).update_labels(request.match_info["id"], version, name, labels)
        except ShoalError as e:
            raise _rpc_error(e, kind, name) from None
        return web.Response(status=200)

    async def remove(request: web.Request) -> web.Response:
        ops = _ops(request, kind)
        obj = await ops.get(request.match_info["id"])
        try:
            await ops.remove(obj.id)
        except ShoalError as e:
            raise _rpc_error(e, kind, obj.spec.annotations.name) from None
        return web.Response(status=204)

    return [("POST", f"/{plural}/create", create), ("GET", f"/{plural}", listing), ("GET", f"/{plural}/{{id}}", inspect),
            ("POST", f"/{plural}/{{id}}/update", update), ("DELETE", f"/{plural}/{{id}}", remove)]


def add_routes(app: web.Application) -> None:
    for kind in ("config", "secret"):
        for method, path, handler in _routes(kind):
            add_route(app, method, path, handler)
