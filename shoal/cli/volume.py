"""`shoal volume ...` (create, ls, inspect, rm, prune) and `shoal cp`, with docker's flags and output.

Requests go through shoal.client to the daemon's /volumes and /containers/{id}/archive API;
cp packs and unpacks tar streams on the client side as the docker CLI does.
"""
from __future__ import annotations

import base64
import io
import json
import os
import posixpath
import sys
import tarfile
from typing import Any

import click

from shoal.cli.common import Failed, client, err, inspect_each, out
from shoal.cli.format import bytes_size, parse_filters, parse_kv, render_table
from shoal.client import Client, DaemonError, ref

CONTEXT = {"help_option_names": ["--help"]}
_GO_DIR = 1 << 31


@click.group(context_settings=CONTEXT)
def volume() -> None:
    """Manage volumes"""


@volume.command(context_settings=CONTEXT)
@click.option("-d", "--driver", default="local", show_default=True, help="Specify volume driver name")
@click.option("--label", multiple=True, help="Set metadata for a volume")
@click.option("-o", "--opt", multiple=True, help="Set driver specific options")
@click.argument("name", required=False, default="")
def create(driver: str, label: tuple[str, ...], opt: tuple[str, ...], name: str) -> None:
    """Create a volume"""
    body = {"Name": name, "Driver": driver, "DriverOpts": parse_kv(opt), "Labels": parse_kv(label)}
    answer = client().post("/volumes/create", body) or {}
    out(f"{answer.get('Name', name)}\n")


@volume.command("ls", context_settings=CONTEXT)
@click.option("-f", "--filter", "filters", multiple=True, metavar="FILTER", help='Provide filter values (e.g. "dangling=true")')
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names")
def ls(filters: tuple[str, ...], quiet: bool) -> None:
    """List volumes"""
    query = {"filters": parse_filters(filters)} if filters else None
    volumes = (client().get("/volumes", query) or {}).get("Volumes") or []
    rows = [[v.get("Driver", ""), v.get("Name", "")] for v in volumes]
    if quiet:
        out("".join(row[1] + "\n" for row in rows))
    else:
        out(render_table(["DRIVER", "VOLUME NAME"], rows))


volume.add_command(ls, "list")


@volume.command(context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True, metavar="VOLUME...")
def inspect(names: tuple[str, ...]) -> None:
    """Display detailed information on one or more volumes"""
    inspect_each(client(), names, lambda r: f"/volumes/{r}")


@volume.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Force the removal of one or more volumes")
@click.argument("names", nargs=-1, required=True, metavar="VOLUME...")
def rm(force: bool, names: tuple[str, ...]) -> None:
    """Remove one or more volumes"""
    c = client()
    failed = False
    for name in names:
        try:
            c.delete(f"/volumes/{ref(name)}", {"force": force or None})
        except DaemonError as exc:
            err(f"Error response from daemon: {exc.message}")
            failed = True
            continue
        out(f"{name}\n")
        sys.stdout.flush()
    if failed:
        raise Failed(1)


volume.add_command(rm, "remove")


@volume.command(context_settings=CONTEXT)
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused volumes, not just anonymous ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help='Provide filter values (e.g. "label=<label>")')
def prune(all_: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused local volumes"""
    if not force:
        which = "all local volumes" if all_ else "anonymous local volumes"
        out(f"WARNING! This will remove {which} not used by at least one container.\n"
            "Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return
    parsed = parse_filters(filters)
    if all_:
        parsed.setdefault("all", {})["true"] = True
    answer = client().post("/volumes/prune", query={"filters": parsed} if parsed else None) or {}
    deleted = answer.get("VolumesDeleted") or []
    text = "Deleted Volumes:\n" + "".join(f"{name}\n" for name in deleted) + "\n" if deleted else ""
    out(text + f"Total reclaimed space: {bytes_size(answer.get('SpaceReclaimed') or 0)}\n")


# ---- cp -------------------------------------------------------------------------------

def _split_target(arg: str) -> tuple[str, str]:
    """("container", "path") for `ctr:/path`, ("", path) for a local path (docker's rule: a
    colon before any slash names a container)."""
    if arg.startswith(("/", ".")):
        return "", arg
    head, sep, tail = arg.partition(":")
    if sep and "/" not in head and head:
        return head, tail
    return "", arg


def _stat(c: Client, container: str, path: str) -> dict[str, Any] | None:
    try:
        response = c.send("HEAD", f"/containers/{ref(container)}/archive", {"path": path})
    except DaemonError as exc:
        if exc.status == 404:
            return None
        raise
    response.read()
    header = response.header("X-Docker-Container-Path-Stat")
    return json.loads(base64.b64decode(header)) if header else None


def _copy_out(c: Client, container: str, path: str, dest: str) -> None:
    response = c.send("GET", f"/containers/{ref(container)}/archive", {"path": path})
    data = response.read()
    info = json.loads(base64.b64decode(response.header("X-Docker-Container-Path-Stat") or "e30="))
    if dest == "-":
        sys.stdout.buffer.write(data)
        return
    base = info.get("name") or posixpath.basename(path)
    # As docker: into an existing directory under the source's name (a source ending in /.
    # gives its content), else to dest itself. Each member's first component is the source's.
    target = os.path.join(dest, base) if os.path.isdir(dest) and not path.endswith("/.") else dest
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            rest = member.name.split("/", 1)[1] if "/" in member.name else ""
            if ".." in rest.split("/"):
                raise click.ClickException(f"refusing archive member {member.name!r} from the daemon")
            out_path = os.path.join(target, rest) if rest else target
            if member.isdir():
                os.makedirs(out_path, exist_ok=True)
            elif member.issym():
                if os.path.lexists(out_path):
                    os.unlink(out_path)
                os.symlink(member.linkname, out_path)
            elif member.isreg():
                os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
                source = tar.extractfile(member)
                with open(out_path, "wb") as handle:
                    handle.write(source.read() if source else b"")
                os.chmod(out_path, member.mode & 0o7777)


def _copy_in(c: Client, src: str, container: str, path: str, copy_uid_gid: bool) -> None:
    if not os.path.lexists(src):
        raise click.ClickException(f"stat {src}: no such file or directory")
    target = _stat(c, container, path)
    if target is not None and target.get("mode", 0) & _GO_DIR:
        dest_dir, name = path, os.path.basename(os.path.normpath(src))
    else:
        dest_dir, name = posixpath.dirname(path) or "/", posixpath.basename(path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src, arcname=name if not src.endswith("/.") else ".")
    query = {"path": dest_dir, "noOverwriteDirNonDir": True, "copyUIDGID": copy_uid_gid or None}
    c.send("PUT", f"/containers/{ref(container)}/archive", query, buf.getvalue(),
           {"Content-Type": "application/x-tar"}).read()


@click.command(context_settings=CONTEXT)
@click.option("-a", "--archive", "archive", is_flag=True, help="Archive mode (copy all uid/gid information)")
@click.option("-L", "--follow-link", is_flag=True, help="Always follow symbol link in SRC_PATH")
@click.argument("src")
@click.argument("dest")
def cp(archive: bool, follow_link: bool, src: str, dest: str) -> None:
    """Copy files/folders between a container and the local filesystem

    Usage: shoal cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-
           shoal cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH
    """
    src_ctr, src_path = _split_target(src)
    dest_ctr, dest_path = _split_target(dest)
    if src_ctr and dest_ctr:
        raise click.UsageError("copying between containers is not supported")
    if not src_ctr and not dest_ctr:
        raise click.UsageError("must specify at least one container source")
    c = client()
    if src_ctr:
        if follow_link:
            info = _stat(c, src_ctr, src_path) or {}
            src_path = info.get("linkTarget") or src_path
        _copy_out(c, src_ctr, src_path, dest_path)
    else:
        _copy_in(c, src_path, dest_ctr, dest_path, archive)
