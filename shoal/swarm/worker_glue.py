"""The node's worker glue: makes agent/worker.py's Worker over the engine's executor (shoal/swarm/executor.py) and
runs it beside every dispatcher session (shoal/swarm/session.py's on_session), retrying while the session lives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from agent.worker import Worker
from proto import swarm_pb2_grpc
from shoal.swarm.executor import EngineExecutor

log = logging.getLogger(__name__)
RETRY_S = 0.5


def session_worker(node: Any) -> Callable[[grpc.aio.Channel, str], Awaitable[None]]:
    """The on_session hook for SwarmNode `node`: its Worker (made once, kept across sessions) follows the stream."""

    async def run(channel: grpc.aio.Channel, session_id: str) -> None:
        if node.worker is None:
            node.worker = Worker(EngineExecutor(node.engine, node.hostname))
        stub = swarm_pb2_grpc.TaskDispatcherStub(channel)
        while True:
            try:
                await node.worker.run_session(stub, session_id)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                log.info("worker: assignments ended: %s: %s", e.code().name, e.details())
            except Exception:  # noqa: BLE001 - keep the session; try the stream again
                log.exception("worker: assignments failed")
            await asyncio.sleep(RETRY_S)

    return run
