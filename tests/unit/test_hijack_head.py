"""A hijacked stream (attach, exec start) starts only once the client has read the response head: a client that
reads the head through a buffered reader and then takes the raw socket (docker-py, through Python's http.client)
would otherwise lose the stream bytes its buffer took with the head. Over a real unix socket, with a client that
reads late as one does under load."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from aiohttp import web

from shoal.api import streams

HEAD = b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"


def late_buffered_client(path: str) -> bytes:
    """Sends the request, reads nothing for 0.3 s, reads the head through a buffered reader as http.client does,
    then the stream from the raw socket as docker-py does; returns the stream it got."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.sendall(b"POST /attach HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    time.sleep(0.3)
    buffered = sock.makefile("rb")
    while buffered.readline() not in (b"\r\n", b""):
        pass
    stream = b""
    while chunk := sock.recv(4096):
        stream += chunk
    sock.close()
    return stream


def test_the_stream_waits_until_the_client_has_read_the_head(tmp_path: Path) -> None:
    async def main() -> bytes:
        async def attach(request: web.Request) -> web.Response:
            conn = streams.HijackedConnection.take_over(request)
            await conn.write(HEAD)
            await conn.until_read()
            await conn.write(b"STREAM")
            await conn.close()
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/attach", attach)
        runner = web.AppRunner(app)
        await runner.setup()
        path = str(tmp_path / "api.sock")
        await web.UnixSite(runner, path).start()
        try:
            return await asyncio.to_thread(late_buffered_client, path)
        finally:
            await runner.cleanup()

    assert asyncio.run(main()) == b"STREAM"
