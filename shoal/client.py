"""A small stdlib-only Docker Engine API client (HTTP/1.1 over unix or TCP sockets).

Used by shoal.cli and shoal.lab; talks to shoal.api (or any Docker-API daemon). Imports only
the stdlib so that a CLI command starts fast.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

API_VERSION = "1.50"
DEFAULT_HOST = "unix:///run/shoal/shoal.sock"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW_STREAM = "application/vnd.docker.raw-stream"


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


@dataclass(slots=True)
class HostAddress:
    scheme: str  # "unix" | "tcp"
    path: str = ""  # unix
    host: str = ""  # tcp
    port: int = 0


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


class _UnixConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX socket."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def encode_query(query: Mapping[str, Any] | None) -> str:
    """Docker-style query: booleans as 1/0, dict/list values as JSON, None dropped."""
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, "1" if value else "0"))
        elif isinstance(value, (dict, list)):
            pairs.append((key, json.dumps(value, separators=(",", ":"))))
        else:
            pairs.append((key, str(value)))
    return "?" + urlencode(pairs) if pairs else ""


def api_path(path: str) -> str:
    """Prefix the API version, except for /_ping which Docker sends unversioned."""
    return path if path == "/_ping" else f"/v{API_VERSION}{path}"


def ref(value: str) -> str:
    """Quote a user-supplied reference for use as one path segment."""
    return quote(value, safe="")


class Client:
    """One connection to one daemon; requests are sequential (keep-alive is reused)."""

    def __init__(self, host: str | None = None, timeout: float | None = None) -> None:
        self.host = resolve_host(host)
        self.address = parse_host(self.host)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    # ---- transport ------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.address.scheme == "unix":
                self._conn = _UnixConnection(self.address.path, self.timeout)
            else:
                self._conn = http.client.HTTPConnection(self.address.host, self.address.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: bytes | BinaryIO | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request and return the response with status < 400 unread.

        Raises DaemonError for an error status (the body is read), DaemonUnreachable when
        nothing listens.
        """
        all_headers = {"Host": "api.moby.localhost" if self.address.scheme == "unix" else self.address.host}
        all_headers.update(headers or {})
        url = api_path(path) + encode_query(query)
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, url, body=body, headers=all_headers)
                response = conn.getresponse()
                break
            except (FileNotFoundError, ConnectionRefusedError, PermissionError, socket.gaierror) as exc:
                self.close()
                raise DaemonUnreachable(self.host, str(exc)) from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # A kept-alive connection the server closed meanwhile: retry once on a new one.
                self.close()
                if attempt == 2 or (body is not None and not isinstance(body, bytes)):
                    raise DaemonUnreachable(self.host, str(exc)) from None
            except OSError as exc:
                self.close()
                raise DaemonUnreachable(self.host, str(exc)) from None
        if response.status >= 400:
            raise DaemonError(response.status, error_message(response.getheader("Content-Type", ""), response.read()))
        return response

    # ---- JSON helpers ---------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send `body` as JSON (if not None) and return the decoded JSON answer (None if empty)."""
        hdrs = dict(headers or {})
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        response = self.send(method, path, query, data, hdrs)
        raw = response.read()
        if not raw.strip():
            return None
        return json.loads(raw)

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
        except ClientError:
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


@dataclass(slots=True)
class FrameDecoder:
    """Splits Docker's multiplexed stream: 8-byte header [stream,0,0,0,len32be] + payload.

    feed() returns the complete frames seen so far as (stream, payload); stream 0 is stdin,
    1 stdout, 2 stderr, 3 systemerr.
    """

    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        frames: list[tuple[int, bytes]] = []
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


def read_chunks(reader: Any, size: int = 65536) -> Iterator[bytes]:
    """Yield what arrives on an HTTPResponse or a buffered socket file until EOF."""
    read = getattr(reader, "read1", None) or reader.read
    while True:
        chunk = read(size)
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


def stream_kind(response: http.client.HTTPResponse) -> bool | None:
    """True for multiplexed, False for raw, None when the Content-Type does not say."""
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
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
