"""The manager's one mapping from an error to a gRPC status (code and message), used at every RPC edge.
Every ShoalError (store errors included) goes through common.errdefs.GRPC_CODE; Raft errors are UNAVAILABLE."""

from __future__ import annotations

from typing import NoReturn

import grpc

from common.errdefs import GRPC_CODE, ShoalError
from manager.raft.core import RaftError


def grpc_status(error: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status a client sees for `error`, or None when it is a bug (let gRPC answer UNKNOWN and log it)."""
    if isinstance(error, ShoalError):
        return grpc.StatusCode[GRPC_CODE[error.kind]], error.message
    if isinstance(error, RaftError):
        # not the leader, no quorum, leadership changed, timed out: the client may retry
        return grpc.StatusCode.UNAVAILABLE, str(error)
    return None


async def abort(ctx: grpc.aio.ServicerContext, error: BaseException, message: str | None = None) -> NoReturn:
    """End the RPC with error's status (message overrides its text); re-raise what has no status."""
    status = grpc_status(error)
    if status is None:
        raise error
    await ctx.abort(status[0], message if message is not None else status[1])
    raise AssertionError("unreachable: ServicerContext.abort raises")
