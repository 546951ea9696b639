"""The node's worker glue: makes agent/worker.py's Worker over the engine's executor (shoal/swarm/executor.py) and
runs it beside every dispatcher session (shoal/swarm/session.py's on_session), with the log broker's subscriptions
(shoal/swarm/logs_agent.py), each retried while the session lives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from agent.worker import Worker
from proto import swarm_pb2_grpc
from shoal.swarm.executor import L_NODE, L_TASK_ID, EngineExecutor
from shoal.swarm.logs_agent import serve_subscriptions
from shoal.swarm.service_glue import glue_for

log = logging.getLogger(__name__)
RETRY_S = 0.5


def session_worker(node: Any) -> Callable[[grpc.aio.Channel, str], Awaitable[None]]:
    """The on_session hook for SwarmNode `node`: its Worker (made once, kept across sessions) follows the stream."""

    async def run(channel: grpc.aio.Channel, session_id: str) -> None:
        if node.worker is None:
            node.worker = Worker(EngineExecutor(node.engine, node.hostname))
        node.worker.on_change = glue_for(node).poke  # a task that runs is announced at once
        tasks = swarm_pb2_grpc.TaskDispatcherStub(channel)
        logs = swarm_pb2_grpc.LogBrokerStub(channel)
        node_id = node.state.node_id if node.state is not None else ""
        await asyncio.gather(
            _retrying("assignments", lambda: node.worker.run_session(tasks, session_id)),
            _retrying("log subscriptions", lambda: serve_subscriptions(logs, session_id, node.engine, node_id)),
            _retrying("service endpoints", lambda: glue_for(node).run()))  # wire12: endpoint_table <-> lb, mesh

    return run


async def remove_task_containers(engine: Any, node_id: str) -> int:
    """Force-removes the containers of swarm tasks this node ran (swarm leave); returns how many went."""
    ex = EngineExecutor(engine, lambda: "")
    gone = 0
    for c in [c for c in list(engine.containers.values()) if c.labels.get(L_NODE) == node_id and c.labels.get(L_TASK_ID)]:
        try:
            await ex.remove_container(c.id)
            gone += 1
        except Exception:  # noqa: BLE001 - leaving goes on; the container stays for the user to remove
            log.exception("swarm leave: could not remove task container %s", c.id[:12])
    return gone


async def _retrying(what: str, fn: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as e:
            log.info("worker: %s ended: %s: %s", what, e.code().name, e.details())
        except Exception:  # noqa: BLE001 - keep the session; try the stream again
            log.exception("worker: %s failed", what)
        await asyncio.sleep(RETRY_S)
