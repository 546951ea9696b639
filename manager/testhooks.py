"""A test-only write path into the store (SHOAL_TEST_HOOKS=1 in the manager's environment): lab tests of the task
executor create, update and remove tasks directly, before the services control API exists. Never enabled otherwise.
Registered by manager/nodes_manager.py; called with a manager's node certificate (tests/lab/test_swarm_tasks.py)."""

from __future__ import annotations

import os
from typing import Any

import grpc

from proto import objects_pb2 as pb

ENV = "SHOAL_TEST_HOOKS"
METHOD = "/shoal.v1.TestHooks/Write"
KINDS = ("task", "service", "config")


UNMANAGED_LABEL = "com.shoal.test.unmanaged"  # a service the executor's lab tests drive by hand


def unmanaged(service: object) -> bool:
    """With the hooks on, a service labelled so is left to the test that wrote it: the orchestrator would otherwise
    reconcile its hand-written tasks against an empty spec (0 replicas) and shut them down."""
    return enabled() and UNMANAGED_LABEL in service.spec.annotations.labels  # type: ignore[attr-defined]


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def handler(raft: Any, check: Any) -> grpc.GenericRpcHandler:
    """Write(StoreProposal) -> StoreProposal(): replays the actions (tasks, services, configs only)
    in one proposal; an UPDATE takes the object's current version, so a test need not track it. Read() -> StoreSnapshot
    of the tasks and services as this manager has them applied."""

    async def write(req: pb.StoreProposal, ctx: grpc.aio.ServicerContext) -> pb.StoreProposal:
        await check(ctx)

        def tx(t: Any) -> None:
            for a in req.actions:
                kind = a.WhichOneof("target")
                if kind not in KINDS:
                    raise ValueError(f"test hook: kind {kind} not writable")
                obj = getattr(a, kind)
                if a.action == pb.StoreAction.CREATE:
                    t.create(kind, obj)
                elif a.action == pb.StoreAction.UPDATE:
                    cur = t.get(kind, obj.id)
                    upd = type(obj)()
                    upd.CopyFrom(obj)
                    upd.meta.CopyFrom(cur.meta)
                    t.update(kind, upd)
                else:
                    t.remove(kind, obj.id)

        try:
            await raft.propose(tx)
        except Exception as e:  # noqa: BLE001 - the test sees the refusal
            await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{type(e).__name__}: {e}")
        return pb.StoreProposal()

    async def read(_req: bytes, ctx: grpc.aio.ServicerContext) -> pb.StoreSnapshot:
        await check(ctx)
        view = raft.store.view()
        return pb.StoreSnapshot(tasks=view.list("task"), services=view.list("service"), last_index=raft.store.last_index)

    rpc = grpc.unary_unary_rpc_method_handler(write, request_deserializer=pb.StoreProposal.FromString,
                                              response_serializer=pb.StoreProposal.SerializeToString)
    rd = grpc.unary_unary_rpc_method_handler(read, request_deserializer=lambda b: b,
                                             response_serializer=pb.StoreSnapshot.SerializeToString)
    return grpc.method_handlers_generic_handler("shoal.v1.TestHooks", {"Write": rpc, "Read": rd})
