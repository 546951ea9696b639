"""The gRPC control API (swarmkit's Control service): configs and a status RPC, served by every manager.
Writes go through RaftManager.propose (forwarded to the leader), reads through RaftManager.read (linearizable)."""

from __future__ import annotations

import grpc

from common.errdefs import InvalidParameter
from manager.configs import matches, new_id
from manager.controlapi_networks import NetworkControl
from manager.grpcstatus import abort
from manager.raft.core import RaftError
from manager.raftnode import RaftManager
from manager.store.errors import NAME_CONFLICT, StoreError
from manager.store.validate import config_spec_error
from proto import control_pb2, control_pb2_grpc, objects_pb2



def validate_config_spec(spec: objects_pb2.ConfigSpec) -> None:
    """swarmkit's validateConfigSpec (the store checks the same again when it applies the entry)."""
    err = config_spec_error(spec)
    if err is not None:
        raise InvalidParameter(err)


def matches_filters(cfg: objects_pb2.Config, f: control_pb2.ListConfigsRequest.Filters) -> bool:
    return matches(cfg, list(f.names), list(f.name_prefixes), list(f.id_prefixes), dict(f.labels))


class ControlServicer(NetworkControl, control_pb2_grpc.ControlServicer):  # networks: controlapi_networks.py
    def __init__(self, manager: RaftManager) -> None:
        self.m = manager

    async def _fail(self, ctx: grpc.aio.ServicerContext, e: Exception, name: str = "") -> None:
        # only the control API knows which name the user typed: it rewords the store's name conflict
        if isinstance(e, StoreError) and e.message == NAME_CONFLICT and name:
            await abort(ctx, e, f"config {name} already exists")
        await abort(ctx, e)

    async def CreateConfig(self, request: control_pb2.CreateConfigRequest, context: grpc.aio.ServicerContext) -> control_pb2.CreateConfigResponse:
        spec = request.spec
        try:
            validate_config_spec(spec)
            cfg = objects_pb2.Config(id=new_id(), spec=spec)

            def create(tx: object) -> None:
                tx.create("config", cfg)  # type: ignore[attr-defined]

            await self.m.propose(create)
            # propose() returns once applied here: this node's view already has it (with its version)
            created = self.m.store.view().get("config", cfg.id) or cfg
        except (InvalidParameter, StoreError, RaftError) as e:
            await self._fail(context, e, spec.annotations.name)
            raise
        return control_pb2.CreateConfigResponse(config=created)

    async def GetConfig(self, request: control_pb2.GetConfigRequest, context: grpc.aio.ServicerContext) -> control_pb2.GetConfigResponse:
        if not request.config_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config ID must be provided")
        try:
            cfg = await self.m.read(lambda v: v.get("config", request.config_id))
        except RaftError as e:
            await self._fail(context, e)
            raise
        if cfg is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"config {request.config_id} not found")
        return control_pb2.GetConfigResponse(config=cfg)

    async def ListConfigs(self, request: control_pb2.ListConfigsRequest, context: grpc.aio.ServicerContext) -> control_pb2.ListConfigsResponse:
        try:
            configs = await self.m.read(lambda v: v.list("config"))
        except RaftError as e:
            await self._fail(context, e)
            raise
        chosen = [c for c in configs if matches_filters(c, request.filters)]
        chosen.sort(key=lambda c: (c.spec.annotations.name, c.id))
        return control_pb2.ListConfigsResponse(configs=chosen)

    async def RemoveConfig(self, request: control_pb2.RemoveConfigRequest, context: grpc.aio.ServicerContext) -> control_pb2.RemoveConfigResponse:
        if not request.config_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config ID must be provided")
        try:
            await self.m.propose(lambda tx: tx.remove("config", request.config_id))
        except (StoreError, RaftError) as e:
            await self._fail(context, e)
            raise
        return control_pb2.RemoveConfigResponse()

    async def Status(self, request: control_pb2.StatusRequest, context: grpc.aio.ServicerContext) -> control_pb2.StatusResponse:
        return control_pb2.StatusResponse(**self.m.status())
