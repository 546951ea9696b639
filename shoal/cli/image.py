"""`shoal image ...` and `shoal images`: ls, load, inspect, rm.

Docker's flags and output over the daemon's /images API (shoal.client).
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, BinaryIO

import click

from shoal.cli import fast
from shoal.cli.common import Failed, client, err, inspect_each, out
from shoal.client import DaemonError, json_messages, read_chunks, ref

CONTEXT = {"help_option_names": ["--help"]}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """Bytes from "20g", "512MiB", "1048576" (binary units, as Docker's RAMInBytes)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"invalid size: {text!r} (expected bytes, or a number with k, m, g or t)")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"invalid size: {text!r} (must be more than 0)")
    return value


class ByteSize(click.ParamType):
    """A click option that takes a size: `--max-image-size 20g`."""

    name = "BYTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group(context_settings=CONTEXT)
def image() -> None:
    """Manage images"""


@click.command("ls", context_settings=CONTEXT)
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all images (default hides intermediate images)")
@click.option("-f", "--filter", "filters", multiple=True, metavar="FILTER",
              help="Filter output based on conditions provided")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs")
@click.argument("repository", required=False)
def ls(show_all: bool, filters: tuple[str, ...], no_trunc: bool, quiet: bool, repository: str | None) -> None:
    """List images"""
    fast.image_ls(client(), show_all, filters, no_trunc, quiet, repository)


@click.command(context_settings=CONTEXT)
@click.option("-i", "--input", "source", type=click.Path(dir_okay=False, exists=True, allow_dash=True), default="-",
              help="Read from tar archive file, instead of STDIN")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the load output")
def load(source: str, quiet: bool) -> None:
    """Load an image from a tar archive or STDIN"""
    if source == "-":
        if sys.stdin.isatty():
            err("requested load from stdin, but stdin is empty")
            raise Failed(1)
        _load(sys.stdin.buffer.read(), quiet)
        return
    with open(source, "rb") as tar:
        _load(tar, quiet, os.fstat(tar.fileno()).st_size)


def _load(body: bytes | BinaryIO, quiet: bool, size: int | None = None) -> None:
    headers = {"Content-Type": "application/x-tar"}
    if size is not None:
        headers["Content-Length"] = str(size)
    response = client().send("POST", "/images/load", {"quiet": quiet}, body, headers)
    for message in json_messages(read_chunks(response)):
        if message.get("error") or message.get("errorDetail"):
            detail = message.get("errorDetail") or {}
            err(str(message.get("error") or detail.get("message") or detail))
            raise Failed(1)
        if message.get("stream"):
            out(str(message["stream"]))
            sys.stdout.flush()


@click.command(context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
def inspect(images: tuple[str, ...]) -> None:
    """Display detailed information on one or more images"""
    inspect_each(client(), images, lambda r: f"/images/{r}/json")


@click.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Force removal of the image")
@click.option("--no-prune", is_flag=True, help="Do not delete untagged parents")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
def rm(force: bool, no_prune: bool, images: tuple[str, ...]) -> None:
    """Remove one or more images"""
    c = client()
    failed = False
    for name in images:
        try:
            answer = c.delete(f"/images/{ref(name)}", {"force": force or None, "noprune": no_prune or None}) or []
        except DaemonError as exc:
            err(f"Error response from daemon: {exc.message}")
            failed = True
            continue
        for item in answer:
            for key in ("Untagged", "Deleted"):
                if item.get(key):
                    out(f"{key}: {item[key]}\n")
    if failed:
        raise Failed(1)


image.add_command(ls, "ls")
image.add_command(ls, "list")
image.add_command(load, "load")
image.add_command(inspect, "inspect")
image.add_command(rm, "rm")
image.add_command(rm, "remove")

images = click.Command("images", context_settings=CONTEXT, callback=ls.callback, params=ls.params,
                       help="List images")
