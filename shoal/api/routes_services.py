"""Docker's service and task endpoints (/services, /services/create, /services/{id}/update, /tasks ...) over the
manager's ServiceOps (manager/controlapi_services.py), in-process on a manager node; 503 with Docker's message
elsewhere. JSON in service_json.py. `/services/{id}/logs` is helper tasks's (not here)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from common.errdefs import InvalidParameter, ShoalError
from manager.controlapi_services import ServiceOps, rpc_text
from proto import control_pb2
from proto import objects_pb2 as pb
from shoal.api import params
from shoal.api.routes_swarm import _swarm
from shoal.api.server import add_route, json_response
from shoal.api.params import version_before
from shoal.api.service_json import TASK_STATES, service_json, service_spec_from_json, task_json
from shoal.api.service_versions import adjust_for_api_version, service_version
from shoal.api.versioned import request_version

T = TypeVar("T")
# moby's `mode` filter values -> the spec's mode
MODE_FILTERS = {"replicated": "replicated", "global": "global", "replicated-job": "replicated_job",
                "global-job": "global_job"}


class ControlError(ShoalError):
    """A control API refusal as docker shows it, keeping its kind (status)."""

    def __init__(self, e: ShoalError) -> None:
        super().__init__(rpc_text(e))
        self.kind = e.kind


async def _call(aw: Awaitable[T]) -> T:
    try:
        return await aw
    except ShoalError as e:
        if getattr(e, "from_control", False):
            raise ControlError(e) from None
        raise


def _ops(request: web.Request) -> ServiceOps:
    return ServiceOps(_swarm(request).ops().raft)


def _name_for_new(spec: pb.ServiceSpec, taken: set[str]) -> None:
    """docker gives a service created without --name a random name, as for containers."""
    if not spec.annotations.name:
        from shoal.engine.names import generate_name

        spec.annotations.name = generate_name(taken)


async def services_create(request: web.Request) -> web.Response:
    ops = _ops(request)
    spec = service_spec_from_json(adjust_for_api_version(params.parse_json_body(await request.read()), request_version(request)))
    if not spec.annotations.name:
        _name_for_new(spec, {s.spec.annotations.name for s in await ops.list_services()})
    svc = await _call(ops.create_service(spec))
    return json_response({"ID": svc.id, "Warnings": None}, status=201)


async def _status_of(ops: ServiceOps, services: list[pb.Service]) -> list[dict[str, int]]:
    tasks, nodes = await ops.raft.read(lambda v: (v.list("task"), {n.id: n for n in v.list("node")}))
    return [ops.service_status(s, tasks, nodes) for s in services]


async def services_list(request: web.Request) -> web.Response:
    ops = _ops(request)
    f = params.parse_filters(request.query.get("filters"))
    unknown = set(f) - {"id", "name", "label", "mode"}
    if unknown:
        raise InvalidParameter(f"invalid filter '{sorted(unknown)[0]}'")
    for m in f.get("mode", []):
        if m not in MODE_FILTERS:
            raise InvalidParameter(f"Invalid filter: 'mode'='{m}'")
    lf = control_pb2.ListServicesRequest.Filters(id_prefixes=f.get("id", []), name_prefixes=f.get("name", []),
                                                 modes=[MODE_FILTERS[m] for m in f.get("mode", [])])
    for label in f.get("label", []):
        k, _, v = label.partition("=")
        lf.labels[k] = v
    services = await _call(ops.list_services(lf))
    # moby ignores `status` below API 1.41, which had no ServiceStatus
    if not version_before(request_version(request), "1.41") and params.bool_value(request.query.get("status")):
        statuses = await _status_of(ops, services)
        return json_response([service_json(s, st) for s, st in zip(services, statuses)])
    return json_response([service_json(s) for s in services])


async def service_inspect(request: web.Request) -> web.Response:
    ops = _ops(request)
    svc = await _call(ops.get_service(request.match_info["id"]))
    return json_response(service_json(svc))


async def service_update(request: web.Request) -> web.Response:
    ops = _ops(request)
    body = adjust_for_api_version(params.parse_json_body(await request.read()), request_version(request))
    version = service_version(request.query.get("version"))
    rollback = request.query.get("rollback", "")
    if rollback not in ("", "previous"):
        raise InvalidParameter(f"unrecognized rollback option {rollback}")
    spec = None if rollback == "previous" else service_spec_from_json(body)
    await _call(ops.update_service(request.match_info["id"], version, spec, rollback=rollback == "previous"))
    return json_response({"Warnings": None})


async def service_delete(request: web.Request) -> web.Response:
    await _call(_ops(request).remove_service(request.match_info["id"]))
    return web.Response(status=200)


async def tasks_list(request: web.Request) -> web.Response:
    ops = _ops(request)
    f = params.parse_filters(request.query.get("filters"))
    unknown = set(f) - {"id", "name", "label", "service", "node", "desired-state", "_up-to-date", "runtime"}
    if unknown:
        raise InvalidParameter(f"invalid filter '{sorted(unknown)[0]}'")
    lf = control_pb2.ListTasksRequest.Filters(id_prefixes=f.get("id", []), names=f.get("name", []))
    for ref in f.get("service", []):
        lf.service_ids.append((await _call(ops.get_service(ref))).id)
    if f.get("node"):
        nodes_ops = _swarm(request).ops()
        for ref in f["node"]:
            lf.node_ids.append((await nodes_ops.get_node(ref)).id if ref != "self" else _swarm(request).state.node_id)
    for state in f.get("desired-state", []):
        if state not in ("running", "shutdown", "accepted"):
            raise InvalidParameter(f"Invalid desired-state filter: '{state}'")
        lf.desired_states.append(TASK_STATES[state])  # type: ignore[arg-type]
    for label in f.get("label", []):
        k, _, v = label.partition("=")
        lf.labels[k] = v
    lf.up_to_date = bool(f.get("_up-to-date"))
    tasks = await _call(ops.list_tasks(lf))
    return json_response([task_json(t) for t in tasks])


async def task_inspect(request: web.Request) -> web.Response:
    task = await _call(_ops(request).get_task(request.match_info["id"]))
    return json_response(task_json(task))


def add_routes(app: web.Application) -> None:
    add_route(app, "POST", "/services/create", services_create)
    add_route(app, "GET", "/services", services_list)
    add_route(app, "GET", "/services/{id}", service_inspect)
    add_route(app, "POST", "/services/{id}/update", service_update)
    add_route(app, "DELETE", "/services/{id}", service_delete)
    add_route(app, "GET", "/tasks", tasks_list)
    add_route(app, "GET", "/tasks/{id}", task_inspect)


