"""Services and tasks in the control API (swarmkit's controlapi/service.go, task.go): ServiceOps, plain async
operations over RaftManager used in-process by the local API (shoal/api/routes_services.py), and the gRPC
ServiceControl servicer over them (registered beside Control in manager/node.py and nodes_manager.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from common.errdefs import GRPC_CODE, InvalidParameter, NotFound, NotImplemented_, ShoalError
from manager import timing
from manager.controlapi import new_id
from manager.controlapi_services_spec import NetworkNotFound, check_port_conflicts, check_spec, resolve_networks
from manager.grpcstatus import abort
from manager.orchestrator.jobs import is_job, iteration, of_run
from manager.orchestrator.tasks import S, canonical, is_dirty
from manager.raft.core import RaftError
from manager.store.errors import StoreError
from proto import control_pb2, control_pb2_grpc
from proto import objects_pb2 as pb

US = pb.UpdateStatus
# Go's names of gRPC codes: docker shows swarmkit's refusals as "rpc error: code = InvalidArgument desc = ..."
GO_CODE = {"INVALID_ARGUMENT": "InvalidArgument", "ALREADY_EXISTS": "AlreadyExists", "NOT_FOUND": "NotFound",
           "UNKNOWN": "Unknown", "FAILED_PRECONDITION": "FailedPrecondition", "INTERNAL": "Internal",
           "UNAVAILABLE": "Unavailable", "PERMISSION_DENIED": "PermissionDenied", "UNIMPLEMENTED": "Unimplemented"}


def from_control(e: ShoalError) -> ShoalError:
    """Marks a refusal as swarmkit's (the control API's), as opposed to the daemon's own lookups."""
    e.from_control = True  # type: ignore[attr-defined]
    return e


def rpc_text(e: ShoalError) -> str:
    """How docker prints a control API error: `rpc error: code = AlreadyExists desc = name conflicts ...`."""
    code = e.code if isinstance(e, StoreError) else GRPC_CODE[e.kind]
    return f"rpc error: code = {GO_CODE.get(code, 'Unknown')} desc = {e.message}"


def copy(msg: Any) -> Any:
    dup = type(msg)()
    dup.CopyFrom(msg)
    return dup


def lookup(items: list[Any], ref: str, kind: str, name_of: Any) -> Any:
    """moby's lookup order: full id, then exact name, then a unique id prefix."""
    for x in items:
        if x.id == ref:
            return x
    for x in items:
        if ref and name_of(x) == ref:
            return x
    prefixed = [x for x in items if ref and x.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(prefixed) > 1:
        raise InvalidParameter(f"{kind} {ref} is ambiguous ({len(prefixed)} matches found)")
    raise NotFound(f"{kind} {ref} not found")


def service_matches(s: pb.Service, f: control_pb2.ListServicesRequest.Filters) -> bool:
    name = s.spec.annotations.name
    alternatives = [*(name == n for n in f.names), *(name.startswith(p) for p in f.name_prefixes),
                    *(s.id.startswith(p) for p in f.id_prefixes)]
    if alternatives and not any(alternatives):
        return False
    if f.modes and s.spec.WhichOneof("mode") not in f.modes:  # replicated, global, replicated_job, global_job
        return False
    labels = s.spec.annotations.labels
    return all(k in labels and (v == "" or labels[k] == v) for k, v in f.labels.items())


def task_matches(t: pb.Task, f: control_pb2.ListTasksRequest.Filters, services: dict[str, pb.Service],
                 nodes: dict[str, pb.Node] | None = None) -> bool:
    if f.service_ids and t.service_id not in f.service_ids:
        return False
    if f.node_ids and t.node_id not in f.node_ids:
        return False
    if f.desired_states and t.desired_state not in f.desired_states:
        return False
    if f.id_prefixes and not any(t.id.startswith(p) for p in f.id_prefixes):
        return False
    if f.names and not any(t.annotations.name.startswith(n) or _short_name(t, services) == n for n in f.names):
        return False
    labels = t.spec.container.labels
    if not all(k in labels and (v == "" or labels[k] == v) for k, v in f.labels.items()):
        return False
    if f.up_to_date:
        svc = services.get(t.service_id)
        if svc is not None and is_dirty(svc, t, (nodes or {}).get(t.node_id)):
            return False
    return True


def _short_name(t: pb.Task, services: dict[str, pb.Service]) -> str:
    svc = services.get(t.service_id)
    base = svc.spec.annotations.name if svc is not None else t.annotations.name.split(".", 1)[0]
    return f"{base}.{t.slot if t.slot else t.node_id}"


class ServiceOps:
    def __init__(self, raft: Any) -> None:
        self.raft = raft

    async def _read(self, fn: Any) -> Any:
        return await self.raft.read(fn)

    # ---------------------------------------------------------------- services
    async def create_service(self, spec: pb.ServiceSpec) -> pb.Service:
        spec = copy(spec)
        try:
            check_spec(spec)
        except ShoalError as e:
            raise from_control(e) from None
        canonical(spec)
        svc = pb.Service(id=new_id())

        def tx(t: Any) -> None:
            resolve_networks(spec, t)
            check_port_conflicts(spec, svc.id, t)
            svc.spec.CopyFrom(spec)
            svc.endpoint.spec.CopyFrom(spec.endpoint)
            if is_job(svc):  # the first run: iteration 0 (swarmkit's CreateService)
                svc.job_status.job_iteration.index = 0
                svc.job_status.last_execution.FromNanoseconds(time.time_ns())
            t.create("service", svc)

        started = time.monotonic()
        await self._propose(tx)
        timing.note("control: service %s created: its proposal waited %.1f ms", svc.id[:12],
                    (time.monotonic() - started) * 1e3)
        return self.raft.store.view().get("service", svc.id) or svc

    async def _propose(self, fn: Any) -> Any:
        try:
            return await self.raft.propose(fn)
        except ShoalError as e:
            if not isinstance(e, NetworkNotFound):
                from_control(e)
            raise

    async def get_service(self, ref: str) -> pb.Service:
        services = await self._read(lambda v: v.list("service"))
        return lookup(services, ref, "service", lambda s: s.spec.annotations.name)

    async def list_services(self, filters: control_pb2.ListServicesRequest.Filters | None = None) -> list[pb.Service]:
        services = await self._read(lambda v: v.list("service"))
        f = filters or control_pb2.ListServicesRequest.Filters()
        return sorted((s for s in services if service_matches(s, f)), key=lambda s: (s.spec.annotations.name, s.id))

    async def update_service(self, ref: str, version: int, spec: pb.ServiceSpec | None, rollback: bool = False) -> pb.Service:
        current = await self.get_service(ref)
        if spec is not None and not rollback:
            spec = copy(spec)
            try:
                check_spec(spec)
            except ShoalError as e:
                raise from_control(e) from None
            canonical(spec)
        service_id = current.id

        def tx(t: Any) -> pb.Service:
            svc = t.get("service", service_id)
            if svc is None:
                raise NotFound(f"service {service_id} not found")
            svc.meta.version.index = version  # the store refuses a stale one: "update out of sequence"
            if rollback:
                if not svc.HasField("previous_spec"):
                    raise InvalidParameter(f"service {service_id} does not have a previous spec")
                new = copy(svc.previous_spec)
                svc.update_status.Clear()
                svc.update_status.state = US.ROLLBACK_STARTED
                svc.update_status.message = "manually requested rollback"
                svc.update_status.started_at.FromNanoseconds(time.time_ns())
            else:
                assert spec is not None
                new = copy(spec)
                resolve_networks(new, t)
                # swarmkit's wordings and codes: Unimplemented for a rename, a plain (Unknown) error for a mode change
                if new.annotations.name != svc.spec.annotations.name:
                    raise NotImplemented_("renaming services is not supported")
                if new.WhichOneof("mode") != svc.spec.WhichOneof("mode"):
                    raise StoreError("UNKNOWN", "service mode change is not allowed")
                svc.ClearField("update_status")  # swarmkit resets it on every update
            if svc.HasField("job_status"):  # every update of a job (a rollback too, as swarmkit) is a new run
                svc.job_status.job_iteration.index += 1
                svc.job_status.last_execution.FromNanoseconds(time.time_ns())
            check_port_conflicts(new, service_id, t)
            svc.previous_spec.CopyFrom(svc.spec)
            svc.spec.CopyFrom(new)
            svc.endpoint.spec.CopyFrom(new.endpoint)
            t.update("service", svc)
            return svc

        await self._propose(tx)
        return self.raft.store.view().get("service", service_id) or current

    async def remove_service(self, ref: str) -> None:
        svc = await self.get_service(ref)
        await self.raft.propose(lambda t: t.remove("service", svc.id))  # the orchestrator stops and reaps its tasks

    # ---------------------------------------------------------------- tasks
    async def list_tasks(self, filters: control_pb2.ListTasksRequest.Filters | None = None) -> list[pb.Task]:
        f = filters or control_pb2.ListTasksRequest.Filters()
        tasks, services, nodes = await self._read(lambda v: (
            v.list("task"), v.list("service"), v.list("node") if f.up_to_date else []))
        by_id = {s.id: s for s in services}
        nodes_by_id = {n.id: n for n in nodes}
        return sorted((t for t in tasks if task_matches(t, f, by_id, nodes_by_id)),
                      key=lambda t: (t.service_id, t.slot, t.node_id, t.id))

    async def get_task(self, ref: str) -> pb.Task:
        tasks = await self._read(lambda v: v.list("task"))
        return lookup(tasks, ref, "task", lambda t: t.annotations.name)

    def service_status(self, svc: pb.Service, tasks: list[pb.Task], nodes: dict[str, pb.Node]) -> dict[str, int]:
        """docker's ServiceStatus: running tasks on live nodes, desired tasks, completed (jobs)."""
        mine = [t for t in tasks if t.service_id == svc.id]
        up = {nid for nid, n in nodes.items() if n.status.state != pb.NodeStatus.DOWN}
        if is_job(svc):
            return job_status(svc, mine, up)
        running = sum(1 for t in mine if t.status.state == S.TASK_STATE_RUNNING and t.desired_state == S.TASK_STATE_RUNNING
                      and t.node_id in up)
        if svc.spec.WhichOneof("mode") == "global":
            desired = sum(1 for t in mine if t.desired_state == S.TASK_STATE_RUNNING and t.node_id in up)
        else:
            desired = svc.spec.replicated.replicas
        return {"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": 0}


def job_status(svc: pb.Service, tasks: list[pb.Task], up: set[str]) -> dict[str, int]:
    """swarmkit's ListServiceStatuses for a job, over the current run's tasks only: running ones (on live nodes, as
    for services), completed ones, and as desired MaxConcurrent (replicated) or the tasks still to complete (global)."""
    run = [t for t in tasks if of_run(t, iteration(svc))]
    running = sum(1 for t in run if t.status.state == S.TASK_STATE_RUNNING and t.node_id in up)
    completed = sum(1 for t in run if t.status.state == S.TASK_STATE_COMPLETE)
    if svc.spec.WhichOneof("mode") == "replicated_job":
        desired = svc.spec.replicated_job.max_concurrent
    else:
        desired = sum(1 for t in run if t.desired_state == S.TASK_STATE_COMPLETE
                      and t.status.state != S.TASK_STATE_COMPLETE)
    return {"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": completed}


# ---------------------------------------------------------------------------------------------- gRPC
class ServiceControlServicer(control_pb2_grpc.ServiceControlServicer):
    def __init__(self, raft: Any) -> None:
        self.raft = raft
        self.ops = ServiceOps(raft)

    async def _run(self, ctx: grpc.aio.ServicerContext, coro: Any) -> Any:
        try:
            return await coro
        except (ShoalError, RaftError) as e:
            await abort(ctx, e)
            raise

    async def CreateService(self, request: control_pb2.CreateServiceRequest, context: grpc.aio.ServicerContext) -> control_pb2.CreateServiceResponse:
        return control_pb2.CreateServiceResponse(service=await self._run(context, self.ops.create_service(request.spec)))

    async def GetService(self, request: control_pb2.GetServiceRequest, context: grpc.aio.ServicerContext) -> control_pb2.GetServiceResponse:
        if not request.service_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "service ID must be provided")
        return control_pb2.GetServiceResponse(service=await self._run(context, self.ops.get_service(request.service_id)))

    async def UpdateService(self, request: control_pb2.UpdateServiceRequest, context: grpc.aio.ServicerContext) -> control_pb2.UpdateServiceResponse:
        if not request.service_id or not request.HasField("service_version"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "service ID and version must be provided")
        spec = request.spec if request.HasField("spec") else None
        if spec is None and not request.rollback:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "service spec must be provided")
        svc = await self._run(context, self.ops.update_service(request.service_id, request.service_version.index, spec,
                                                               request.rollback))
        return control_pb2.UpdateServiceResponse(service=svc)

    async def RemoveService(self, request: control_pb2.RemoveServiceRequest, context: grpc.aio.ServicerContext) -> control_pb2.RemoveServiceResponse:
        if not request.service_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "service ID must be provided")
        await self._run(context, self.ops.remove_service(request.service_id))
        return control_pb2.RemoveServiceResponse()

    async def ListServices(self, request: control_pb2.ListServicesRequest, context: grpc.aio.ServicerContext) -> control_pb2.ListServicesResponse:
        return control_pb2.ListServicesResponse(services=await self._run(context, self.ops.list_services(request.filters)))

    async def ListTasks(self, request: control_pb2.ListTasksRequest, context: grpc.aio.ServicerContext) -> control_pb2.ListTasksResponse:
        return control_pb2.ListTasksResponse(tasks=await self._run(context, self.ops.list_tasks(request.filters)))

    async def GetTask(self, request: control_pb2.GetTaskRequest, context: grpc.aio.ServicerContext) -> control_pb2.GetTaskResponse:
        if not request.task_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "task ID must be provided")
        return control_pb2.GetTaskResponse(task=await self._run(context, self.ops.get_task(request.task_id)))

    async def Watch(self, request: control_pb2.WatchServicesRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[control_pb2.WatchServicesMessage]:
        kinds = set(request.kinds) or {"service", "task"}
        bad = kinds - {"service", "task", "node"}
        if bad:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid watch kind {sorted(bad)[0]!r}: service, task or node")
        watch = self.raft.store.watch(kinds)
        try:
            # an empty first message says the watch is established (as swarmkit's watch API does): a client
            # that waits for it sees every change it makes afterwards
            yield control_pb2.WatchServicesMessage()
            async for ev in watch:
                msg = control_pb2.WatchServicesMessage(index=ev.index, action=ev.action)
                getattr(msg, ev.kind).CopyFrom(ev.object)
                yield msg
        except ShoalError as e:
            await abort(context, e)
        finally:
            watch.close()
