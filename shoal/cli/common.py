"""What every CLI command shares: the -H host, the client, and Docker-style error exits.

Used by shoal.cli.main and the per-group modules; talks through shoal.client.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import NoReturn

import click

from shoal.client import Client


@dataclass(slots=True)
class Globals:
    host: str | None = None
    _client: Client | None = field(default=None)

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.host)
        return self._client


class Failed(Exception):
    """A command failed after printing its own message; exit with `code`."""

    def __init__(self, code: int = 1) -> None:
        super().__init__(code)
        self.code = code


def client() -> Client:
    """The client of the running command (the root group stored the -H value)."""
    ctx = click.get_current_context()
    return ctx.find_object(Globals).client()  # type: ignore[union-attr]


def err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    err(message)
    raise Failed(code)


def out(text: str) -> None:
    sys.stdout.write(text)


# Options shared by several commands; defined once so flags read the same everywhere.
filter_option = click.option("-f", "--filter", "filters", multiple=True, metavar="FILTER",
                             help='Provide filter values (e.g. "driver=bridge")')
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Only display IDs")
no_trunc_option = click.option("--no-trunc", is_flag=True, help="Do not truncate the output")
