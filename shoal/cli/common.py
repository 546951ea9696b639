"""What every CLI command shares: the -H host, the client, output and Docker-style exits.

Used by shoal.cli.main, shoal.cli.fast and the per-group modules; click-free so that the
fast path can use it too.
"""
from __future__ import annotations

import sys
TYPE_CHECKING = False  # not `from typing import ...`: typing costs ~3 ms of CLI start-up

from shoal.client import Client

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import NoReturn

    import click


class Globals:
    """Root options of one invocation (ctx.obj); the client is made on first use."""

    __slots__ = ("host", "_client")

    def __init__(self, host: str | None = None) -> None:
        self.host = host
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.host)
        return self._client


class Failed(Exception):
    """A command failed after printing its own message; exit with `code`."""

    def __init__(self, code: int = 1) -> None:
        super().__init__(code)
        self.code = code


def client(ctx: click.Context | None = None) -> Client:
    """The client of the running click command (the root group stored the -H value)."""
    import click

    ctx = ctx or click.get_current_context()
    found = ctx.find_object(Globals)
    if found is None:
        found = ctx.ensure_object(Globals)
    return found.client()


def err(message: str) -> None:
    sys.stdout.flush()  # keep stdout and stderr in order on a terminal
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    err(message)
    raise Failed(code)


def out(text: str) -> None:
    sys.stdout.write(text)


def inspect_each(c: Client, refs: Sequence[str], path: Callable[[str], str],
                 query: dict[str, object] | None = None) -> None:
    """docker's `X inspect A B`: a JSON array of what was found, then each 404 as an error (exit 1)."""
    from shoal.cli.format import to_json
    from shoal.client import DaemonError, ref

    found, errors = [], []
    for name in refs:
        try:
            found.append(c.get(path(ref(name)), query))
        except DaemonError as exc:
            if exc.status != 404:
                raise
            errors.append(exc.message)
    out(to_json(found) + "\n")
    if errors:
        sys.stdout.flush()
        for message in errors:
            err(f"Error response from daemon: {message}")
        raise Failed(1)
