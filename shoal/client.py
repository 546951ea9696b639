"""A small Docker Engine API client: HTTP/1.1 over a unix or TCP socket, JSON bodies.

Used by shoal.cli and shoal.lab; talks to shoal.api (or any Docker-API daemon). It imports
only socket, json and struct: http.client (via email.*), urllib, typing and dataclasses cost
more start-up time than a whole `shoal network ls` may take, so HTTP is spoken here directly.
"""
from __future__ import annotations

import _socket  # the C module: `socket` adds enum/selectors imports the CLI cannot afford
import json
import os
import struct
TYPE_CHECKING = False  # not `from typing import ...`: typing costs ~3 ms of CLI start-up

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any, BinaryIO

API_VERSION = "1.50"
DEFAULT_HOST = "unix:///run/shoal/shoal.sock"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW_STREAM = "application/vnd.docker.raw-stream"
USER_AGENT = "shoal-cli/0.1.0"


class ClientError(Exception):
    """Base class of everything this module raises."""


class DaemonError(ClientError):
    """The daemon answered with an error status; `message` is its `{"message": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DaemonUnreachable(ClientError):
    """No daemon listens at `host` (missing socket, connection refused, bad address)."""

    def __init__(self, host: str, reason: str = "") -> None:
        super().__init__(f"Cannot connect to the shoal daemon at {host}. Is the shoal daemon running?")
        self.host = host
        self.reason = reason


class BadHost(ClientError):
    """The -H/--host value is not unix://PATH or tcp://HOST:PORT."""


class HostAddress:
    """A parsed -H value. (Plain class: dataclasses would import inspect, ~5 ms.)"""

    __slots__ = ("scheme", "path", "host", "port")

    def __init__(self, scheme: str, path: str = "", host: str = "", port: int = 0) -> None:
        self.scheme, self.path, self.host, self.port = scheme, path, host, port

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostAddress) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return f"HostAddress({self.scheme!r}, path={self.path!r}, host={self.host!r}, port={self.port})"


def resolve_host(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """-H wins, then SHOAL_HOST, then DOCKER_HOST, then the default socket."""
    for value in (explicit, environ.get("SHOAL_HOST"), environ.get("DOCKER_HOST")):
        if value:
            return value
    return DEFAULT_HOST


def parse_host(url: str) -> HostAddress:
    """Parse `unix:///path` or `tcp://host:port` (a bare `/path` is taken as unix)."""
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        if not path:
            raise BadHost(f"invalid host {url!r}: missing socket path")
        return HostAddress("unix", path=path)
    if url.startswith("/"):
        return HostAddress("unix", path=url)
    if url.startswith("tcp://"):
        rest = url[len("tcp://"):].rstrip("/")
        if rest.startswith("["):  # [v6]:port
            host, sep, port = rest[1:].partition("]:")
        else:
            host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadHost(f"invalid host {url!r}: expected tcp://HOST:PORT")
        return HostAddress("tcp", host=host, port=int(port))
    raise BadHost(f"invalid host {url!r}: expected unix://PATH or tcp://HOST:PORT")


# ---- URLs -----------------------------------------------------------------------------
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(value: str) -> str:
    """Percent-encode everything but RFC 3986 unreserved characters (UTF-8)."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in value.encode())


def ref(value: str) -> str:
    """Quote a user-supplied reference for use as one path segment."""
    return quote(value)


def encode_query(query: Mapping[str, Any] | None) -> str:
    """Docker-style query: booleans as 1/0, dict/list values as JSON, None dropped."""
    if not query:
        return ""
    pairs = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, (dict, list)):
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = str(value)
        pairs.append(f"{quote(key)}={quote(text)}")
    return "?" + "&".join(pairs) if pairs else ""


def api_path(path: str) -> str:
    """Prefix the API version, except for /_ping which Docker sends unversioned."""
    return path if path == "/_ping" else f"/v{API_VERSION}{path}"


# ---- HTTP/1.1 -------------------------------------------------------------------------
class _Stream:
    """A socket with a read buffer."""

    __slots__ = ("sock", "buf", "eof")

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def readline(self, limit: int = 65536) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                return line
            if len(self.buf) > limit:
                raise ClientError("malformed response from daemon: header line too long")
            if not self._fill():
                line = bytes(self.buf)
                self.buf.clear()
                return line

    def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes: what is buffered, else one recv; b'' at EOF."""
        if not self.buf and not self._fill():
            return b""
        data = bytes(self.buf[:limit])
        del self.buf[:limit]
        return data

    def read_exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self._fill():
                raise ClientError("connection closed by the daemon in the middle of a response")
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data


class Response:
    """A response whose body is read on demand (Content-Length, chunked, or until close).

    After `101 Switching Protocols` (Docker's hijack for exec/attach) the body is the raw
    connection until the daemon closes it.
    """

    __slots__ = ("status", "reason", "headers", "_stream", "_remaining", "_chunked", "done", "reusable")

    def __init__(self, stream: _Stream, method: str) -> None:
        self._stream = stream
        line = stream.readline()
        if not line:
            raise ConnectionResetError("connection closed before the response")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ClientError(f"malformed status line from daemon: {line[:100]!r}")
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers: dict[str, str] = {}
        while True:
            raw = stream.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.header("Transfer-Encoding").lower()
        length = self.header("Content-Length")
        self._remaining: int | None = int(length) if length.isdigit() and not self._chunked else None
        no_body = method == "HEAD" or self.status in (204, 304) or (100 <= self.status < 200 and self.status != 101)
        if no_body:
            self._remaining, self._chunked = 0, False
        close = "close" in self.header("Connection").lower() or parts[0] == "HTTP/1.0"
        until_close = self.status == 101 or (self._remaining is None and not self._chunked)
        self.reusable = not close and not until_close
        self.done = self._remaining == 0

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def read1(self, size: int = 65536) -> bytes:
        """The next bytes of the body (at most `size`); b'' once it is complete."""
        if self.done:
            return b""
        if self._chunked:
            return self._read_chunk(size)
        if self._remaining is None:  # until close
            data = self._stream.read_some(size)
            self.done = not data
            return data
        data = self._stream.read_some(min(size, self._remaining))
        if not data:
            raise ClientError("connection closed by the daemon in the middle of a response")
        self._remaining -= len(data)
        self.done = self._remaining == 0
        return data

    def _read_chunk(self, size: int) -> bytes:
        if not self._remaining:
            line = self._stream.readline().split(b";", 1)[0].strip()
            try:
                self._remaining = int(line, 16)
            except ValueError:
                raise ClientError(f"malformed chunk size from daemon: {line[:40]!r}") from None
            if self._remaining == 0:
                while self._stream.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self.done = True
                return b""
        data = self._stream.read_some(min(size, self._remaining))
        if not data:
            raise ClientError("connection closed by the daemon in the middle of a response")
        self._remaining -= len(data)
        if self._remaining == 0:
            self._stream.read_exact(2)  # CRLF after the chunk
        return data

    def read(self) -> bytes:
        parts = []
        while True:
            data = self.read1()
            if not data:
                return b"".join(parts)
            parts.append(data)


class Client:
    """One connection to one daemon; requests are sequential and keep-alive is reused."""

    def __init__(self, host: str | None = None, timeout: float | None = None) -> None:
        self.host = resolve_host(host)
        self.address = parse_host(self.host)
        self.timeout = timeout
        self._stream: _Stream | None = None
        self._last: Response | None = None

    def _connect(self) -> _Stream:
        a = self.address
        try:
            if a.scheme == "unix":
                sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(a.path)
                except OSError:
                    sock.close()
                    raise
            else:
                import socket

                sock = socket.create_connection((a.host, a.port), timeout=self.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise DaemonUnreachable(self.host, str(exc)) from None
        return _Stream(sock)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.sock.close()
            self._stream = None
        self._last = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, path: str, query: Mapping[str, Any] | None = None,
             body: bytes | BinaryIO | None = None, headers: Mapping[str, str] | None = None) -> Response:
        """Send one request; return its response (status < 400) with the body unread.

        Raises DaemonError for an error status (after reading the body), DaemonUnreachable
        when nothing listens.
        """
        host = "api.moby.localhost" if self.address.scheme == "unix" else f"{self.address.host}:{self.address.port}"
        lines = [f"{method} {api_path(path)}{encode_query(query)} HTTP/1.1", f"Host: {host}", f"User-Agent: {USER_AGENT}"]
        names = set()
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
            names.add(name.lower())
        if "content-length" not in names and (body is not None or method in ("POST", "PUT")):
            lines.append(f"Content-Length: {len(body) if isinstance(body, bytes) else 0}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self._last is not None and not (self._last.done and self._last.reusable):
            self.close()  # the previous response was not read to its end: start afresh
        for attempt in (1, 2):
            reused = self._stream is not None
            if self._stream is None:
                self._stream = self._connect()
            try:
                self._send(head, body)
                response = Response(self._stream, method)
                break
            except (ConnectionResetError, BrokenPipeError) as exc:
                # A kept-alive connection the daemon closed meanwhile: retry once, afresh.
                self.close()
                if attempt == 2 or not reused or not (body is None or isinstance(body, bytes)):
                    raise DaemonUnreachable(self.host, str(exc)) from None
            except OSError as exc:
                self.close()
                raise DaemonUnreachable(self.host, str(exc)) from None
        self._last = response
        if response.status >= 400:
            raise DaemonError(response.status, error_message(response.header("Content-Type"), response.read()))
        return response

    def _send(self, head: bytes, body: bytes | BinaryIO | None) -> None:
        assert self._stream is not None
        sock = self._stream.sock
        if body is None or isinstance(body, bytes):
            sock.sendall(head + (body or b""))
            return
        sock.sendall(head)
        while True:
            block = body.read(1 << 20)
            if not block:
                return
            sock.sendall(block)

    # ---- JSON helpers ---------------------------------------------------------------
    def call(self, method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None,
             headers: Mapping[str, str] | None = None) -> Any:
        """Send `body` as JSON (if not None); return the decoded JSON answer (None if empty)."""
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        raw = self.send(method, path, query, data, hdrs).read()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ClientError(f"invalid JSON from daemon for {method} {path}: {raw[:200]!r}") from None

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        return self.call("GET", path, query)

    def post(self, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        return self.call("POST", path, query, body)

    def delete(self, path: str, query: Mapping[str, Any] | None = None) -> Any:
        return self.call("DELETE", path, query)

    def ping(self) -> bool:
        """True when the daemon answers GET /_ping with 200."""
        try:
            self.send("GET", "/_ping").read()
            return True
        except (ClientError, OSError):
            self.close()
            return False


def error_message(content_type: str, raw: bytes) -> str:
    """The text of an error response: `message` of a JSON body, else the body itself."""
    text = raw.decode("utf-8", "replace").strip()
    if content_type.split(";")[0].strip() == "application/json":
        try:
            data = json.loads(text)
        except ValueError:
            return text
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return data["message"]
    return text


# ---- multiplexed streams (sans-IO) ----------------------------------------------------
_HEADER = struct.Struct(">BxxxL")


class FrameDecoder:
    """Splits Docker's multiplexed stream: 8-byte header [stream,0,0,0,len32be] + payload.

    feed() returns the complete frames seen so far as (stream, payload); stream 0 is stdin,
    1 stdout, 2 stderr, 3 systemerr.
    """

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= _HEADER.size:
            stream, length = _HEADER.unpack_from(self.buffer)
            end = _HEADER.size + length
            if len(self.buffer) < end:
                break
            frames.append((stream, bytes(self.buffer[_HEADER.size:end])))
            del self.buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered (non-zero at EOF means truncation)."""
        return len(self.buffer)


def looks_multiplexed(first: bytes) -> bool:
    """Guess whether a stream without a telling Content-Type is multiplexed."""
    return len(first) >= 8 and first[0] in (0, 1, 2, 3) and first[1:4] == b"\0\0\0"


def read_chunks(response: Response, size: int = 65536) -> Iterator[bytes]:
    """Yield the body of `response` as it arrives, until its end."""
    while True:
        chunk = response.read1(size)
        if not chunk:
            return
        yield chunk


def demultiplex(chunks: Iterator[bytes], stdout: BinaryIO, stderr: BinaryIO, multiplexed: bool | None = None) -> None:
    """Copy a (possibly) multiplexed stream to stdout/stderr; raw streams go to stdout.

    multiplexed=None sniffs the first chunk's header.
    """
    decoder = FrameDecoder()
    for chunk in chunks:
        if multiplexed is None:
            multiplexed = looks_multiplexed(chunk)
        if not multiplexed:
            stdout.write(chunk)
            stdout.flush()
            continue
        for stream, payload in decoder.feed(chunk):
            out = stderr if stream in (2, 3) else stdout
            out.write(payload)
            out.flush()


def stream_kind(response: Response) -> bool | None:
    """True for multiplexed, False for raw, None when the Content-Type does not say."""
    content_type = response.header("Content-Type").split(";")[0].strip()
    if content_type == MULTIPLEXED:
        return True
    if content_type == RAW_STREAM:
        return False
    return None


def json_messages(chunks: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """Decode a stream of concatenated JSON objects (Docker's progress / load output)."""
    decoder = json.JSONDecoder()
    buffer = ""
    pending = b""
    for chunk in chunks:
        pending += chunk
        try:
            buffer += pending.decode("utf-8")
            pending = b""
        except UnicodeDecodeError:
            continue  # a multi-byte character split across chunks
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                obj, end = decoder.raw_decode(buffer)
            except ValueError:
                break
            buffer = buffer[end:]
            if isinstance(obj, dict):
                yield obj
    if buffer.strip():
        raise ClientError(f"truncated JSON stream from daemon: {buffer.strip()[:200]!r}")
