"""A control API front-end process: serves shoal.v1.Control's unary calls on the manager's client address and hands
each to the raft process over manager/handoff.py's unix socket. Started (N of them, SO_REUSEPORT) by manager/node.py.

`python -m manager.frontend --listen HOST:PORT --socket PATH [--tls-ca F --tls-cert F --tls-key F]`: exits when the
raft process closes the socket (it stopped or died), so a front-end never outlives its manager."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import grpc

from manager.handoff import METHODS, SERVICE, FrontSide, status_code
from manager.transport import GRPC_OPTIONS, TLSFiles

log = logging.getLogger(__name__)
CONNECT_TRIES = 50  # the raft process listens before it spawns us: only a very slow start needs these
CONNECT_WAIT_S = 0.1


def _identity(b: bytes) -> bytes:
    return b


def handler(link: FrontSide) -> grpc.GenericRpcHandler:
    def method(index: int, name: str):  # type: ignore[no-untyped-def]
        async def call(raw: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
            status, body = await link.call(index, raw)
            if status:
                await ctx.abort(status_code(status), body.decode(errors="replace"))
            return body

        call.__name__ = name
        return grpc.unary_unary_rpc_method_handler(call, _identity, _identity)

    return grpc.method_handlers_generic_handler(SERVICE, {name: method(i, name) for i, name in enumerate(METHODS)})


async def connect(path: str, link: FrontSide) -> None:
    loop = asyncio.get_running_loop()
    for attempt in range(CONNECT_TRIES):
        try:
            await loop.create_unix_connection(lambda: link, path)
            return
        except OSError:
            if attempt == CONNECT_TRIES - 1:
                raise
            await asyncio.sleep(CONNECT_WAIT_S)
    raise AssertionError("unreachable")


async def serve(listen: str, path: str, tls: TLSFiles | None) -> int:
    link = FrontSide()
    server = grpc.aio.server(options=[*GRPC_OPTIONS, ("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((handler(link),))
    try:
        if tls is not None:
            server.add_secure_port(listen, tls.server_credentials())
        else:
            server.add_insecure_port(listen)
    except RuntimeError:  # gRPC's "Failed to bind to address": taken, or not an address of this host
        print(f"control front-end: cannot listen on {listen}", file=sys.stderr)
        return 1
    await server.start()
    # connected = serving: the raft process counts its front-ends ready by their links
    try:
        await connect(path, link)
    except OSError as e:
        print(f"control front-end: cannot reach the manager at {path}: {e}", file=sys.stderr)
        await server.stop(grace=None)
        return 1
    await link.closed  # the raft process stopped (or died): so do we
    await server.stop(grace=0.2)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m manager.frontend")
    p.add_argument("--listen", required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--tls-ca", type=Path)
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio")
    a = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SHOAL_FRONTEND_LOG", "WARNING"), format="%(asctime)s front-end %(levelname)s %(name)s: %(message)s")
    tls = TLSFiles(a.tls_ca, a.tls_cert, a.tls_key) if a.tls_ca and a.tls_cert and a.tls_key else None
    # a Ctrl-C in the manager's terminal reaches its whole process group: the manager stops, and so do we (link closed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if a.event_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(serve(a.listen, a.socket, tls))


if __name__ == "__main__":
    sys.exit(main())
