"""`shoal config ...` and `shoal secret ...`: create, ls, inspect, rm — docker's output against the daemon's
/configs and /secrets endpoints (shoal/api/routes_configs.py). Secret data is never shown."""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path

import click

from shoal.cli.common import Failed, client, err, out
from shoal.cli.format import created_ago, parse_kv, parse_time, render_table, to_json
from shoal.client import DaemonError

CONTEXT = {"help_option_names": ["--help"]}


def _ago(value: str, now: float) -> str:
    t = parse_time(value)
    return created_ago(t.timestamp(), now) if t is not None else ""


def ls_rows(objects: list[dict], kind: str, now: float) -> list[list[str]]:
    rows = []
    for o in sorted(objects, key=lambda o: o["Spec"]["Name"]):
        row = [o["ID"], o["Spec"]["Name"]]
        if kind == "secret":
            row.append("")  # DRIVER: shoal keeps secrets in the swarm's store only
        rows += [[*row, _ago(o.get("CreatedAt", ""), now), _ago(o.get("UpdatedAt", ""), now)]]
    return rows


def _read_data(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise click.UsageError(f"error reading content from {path!r}: {e.strerror}") from None


def make_group(kind: str) -> click.Group:
    plural = kind + "s"
    title = "Swarm configs" if kind == "config" else "Swarm secrets"

    @click.group(name=kind, context_settings=CONTEXT, help=f"Manage {title}")
    def group() -> None:
        pass

    @group.command("create", context_settings=CONTEXT, help=f"Create a {kind} from a file or STDIN as content")
    @click.option("-l", "--label", "labels", multiple=True, help=f"{kind.capitalize()} labels")
    @click.argument("name")
    @click.argument("file", metavar="file|-")
    def create(labels: tuple[str, ...], name: str, file: str) -> None:
        body = {"Name": name, "Labels": parse_kv(labels), "Data": base64.b64encode(_read_data(file)).decode()}
        try:
            created = client().post(f"/{plural}/create", body)
        except DaemonError as e:
            err(f"Error response from daemon: {e.message}")
            raise Failed(1) from None
        out(created["ID"] + "\n")

    @group.command("ls", context_settings=CONTEXT, help=f"List {plural}")
    @click.option("-q", "--quiet", is_flag=True, help="Only display IDs")
    def ls(quiet: bool) -> None:
        objects = client().get(f"/{plural}")
        if quiet:
            out("".join(o["ID"] + "\n" for o in sorted(objects, key=lambda o: o["Spec"]["Name"])))
            return
        headers = ["ID", "NAME", "CREATED", "UPDATED"] if kind == "config" else ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]
        out(render_table(headers, ls_rows(objects, kind, time.time())))

    @group.command("inspect", context_settings=CONTEXT, help=f"Display detailed information on one or more {plural}")
    @click.argument("refs", nargs=-1, required=True)
    def inspect(refs: tuple[str, ...]) -> None:
        found, missing = [], []
        for ref in refs:
            try:
                found.append(client().get(f"/{plural}/{ref}"))
            except DaemonError as e:
                if e.status != 404:
                    raise
                missing.append(ref)
        out(to_json(found) + "\n")
        for ref in missing:
            err(f"Error: no such {kind}: {ref}")
        if missing:
            raise Failed(1)

    @group.command("rm", context_settings=CONTEXT, help=f"Remove one or more {plural}")
    @click.argument("refs", nargs=-1, required=True)
    def rm(refs: tuple[str, ...]) -> None:
        failed = False
        for ref in refs:
            try:
                client().delete(f"/{plural}/{ref}")
            except DaemonError as e:
                err(f"Error response from daemon: {e.message}")
                failed = True
                continue
            out(ref + "\n")
        if failed:
            raise Failed(1)

    group.add_command(ls, "list")
    group.add_command(rm, "remove")
    return group


config = make_group("config")
secret = make_group("secret")
