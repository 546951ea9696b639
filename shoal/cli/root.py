"""The click command tree of `shoal`: the root group and the system commands.

Run by shoal.cli.main (which maps errors to exit codes); groups live in shoal.cli.network /
container / image / labcmd and talk to the daemon through shoal.client.
"""
from __future__ import annotations

import importlib
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import click

from shoal.cli.common import Failed, Globals, client, err, fail, out
from shoal.cli.image import ByteSize
from shoal.cli.format import bytes_size, to_json
from shoal.client import API_VERSION, DaemonError, ref

VERSION = "0.1.0"
CONTEXT = {"help_option_names": ["--help"]}


Loader = Callable[[], click.Command]


def _attr(module: str, name: str) -> Loader:
    return lambda: getattr(importlib.import_module(f"shoal.cli.{module}"), name)


def _resource(name: str) -> Loader:
    def load() -> click.Command:
        from shoal.cli import resources
        return {n: c for c, n in resources.COMMANDS}[name]
    return load


def _container_group() -> click.Command:
    from shoal.cli import container, verbs
    group = container.container
    for command, name in ((verbs.container_prune, "prune"), (verbs.rename, "rename"), (verbs.wait, "wait")):
        group.add_command(command, name)
    return group


def _image_group() -> click.Command:
    from shoal.cli import image, verbs
    image.image.add_command(verbs.image_prune, "prune")
    return image.image


# Every subcommand defined outside this module, by name: its module is imported when the command runs (or when --help
# lists it), not at every start.
LAZY: dict[str, Loader] = {
    "network": _attr("network", "network"),
    "config": _attr("configs", "config"), "secret": _attr("configs", "secret"),
    "volume": _attr("volume", "volume"), "cp": _attr("volume", "cp"),
    **{name: _attr("container", attr) for name, attr in (
        ("run", "run"), ("ps", "ps"), ("exec", "exec_"), ("logs", "logs"), ("attach", "attach"), ("rm", "rm"),
        ("stop", "stop"), ("kill", "kill"), ("start", "start"), ("create", "create"), ("restart", "restart"),
        ("port", "port"))},
    "container": _container_group,
    **{name: _resource(name) for name in ("stats", "top", "pause", "unpause", "update")},
    "image": _image_group, "images": _attr("image", "images"), "rmi": _attr("image", "rm"),
    "lab": _attr("labcmd", "lab"),
    "swarm": _attr("swarm", "swarm"), "node": _attr("node", "node"), "service": _attr("service", "service"),
    "events": _attr("verbs", "events"), "rename": _attr("verbs", "rename"), "wait": _attr("verbs", "wait"),
    "system": _attr("verbs", "system"),
}


class LazyGroup(click.Group):
    """The root group. Importing every command module at each start cost ~40 ms of a `shoal service create`'s ~100
    (the commands' own imports: tarfile, datetime, the lab...): a command's module is loaded when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY:
            self.add_command(LAZY[cmd_name](), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.option("-H", "--host", metavar="URL", default=None,
              help="Daemon socket to connect to: unix://PATH or tcp://HOST:PORT "
                   "(default: $SHOAL_HOST, else $DOCKER_HOST, else unix:///run/shoal/shoal.sock)")
@click.version_option(VERSION, "-v", "--version", prog_name="shoal", message="shoal version %(version)s")
@click.pass_context
def cli(ctx: click.Context, host: str | None) -> None:
    """A swarm-mode cluster in Python: a Docker-compatible node and its client."""
    ctx.obj = Globals(host)


# ---- system ---------------------------------------------------------------------------
def _aligned(pairs: list[tuple[str, str]], minwidth: int = 20) -> str:
    """Key/value lines as docker's version template lays them out (tabwriter minwidth 20)."""
    width = max([minwidth] + [len(k) + 1 for k, _ in pairs])
    return "".join(f"{k.ljust(width)}{v}\n" for k, v in pairs)


@cli.command(context_settings=CONTEXT)
def version() -> None:
    """Show the shoal version information"""
    text = "Client:\n" + _aligned([
        (" Version:", VERSION),
        (" API version:", API_VERSION),
        (" Python version:", platform.python_version()),
        (" OS/Arch:", f"linux/{_arch()}"),
        (" Context:", "default"),
    ])
    out(text)
    sys.stdout.flush()
    info = client().get("/version")
    engine = next((c for c in info.get("Components") or [] if c.get("Name") == "Engine"), None)
    details = (engine or {}).get("Details") or {}

    def pick(key: str, top: str | None = None) -> str:
        value = details.get(key, info.get(top or key, ""))
        return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

    name = (info.get("Platform") or {}).get("Name") or ""
    lines = [(
        "  Version:", str((engine or {}).get("Version") or info.get("Version", ""))),
        ("  API version:", f"{pick('ApiVersion')} (minimum version {pick('MinAPIVersion')})")]
    for label, key in (("  Go version:", "GoVersion"), ("  Git commit:", "GitCommit"), ("  Built:", "BuildTime")):
        if pick(key):
            lines.append((label, pick(key)))
    lines.append(("  OS/Arch:", f"{pick('Os')}/{pick('Arch')}"))
    lines.append(("  Experimental:", pick("Experimental") or "false"))
    out(f"\nServer:{' ' + name if name else ''}\n Engine:\n" + _aligned(lines))


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@cli.command(context_settings=CONTEXT)
def info() -> None:
    """Display system-wide information"""
    out("Client:\n" + _aligned([(" Version:", VERSION), (" Context:", "default"), (" Debug Mode:", "false")], 0))
    sys.stdout.flush()
    data = client().get("/info") or {}
    lines = ["", "Server:"]

    def add(label: str, key: str, indent: int = 1) -> None:
        if data.get(key) not in (None, ""):
            value = data[key]
            lines.append(f"{' ' * indent}{label}: {str(value).lower() if isinstance(value, bool) else value}")

    add("Containers", "Containers")
    add("Running", "ContainersRunning", 2)
    add("Paused", "ContainersPaused", 2)
    add("Stopped", "ContainersStopped", 2)
    add("Images", "Images")
    add("Server Version", "ServerVersion")
    add("Storage Driver", "Driver")
    add("Cgroup Driver", "CgroupDriver")
    add("Cgroup Version", "CgroupVersion")
    swarm = data.get("Swarm") or {}
    state = swarm.get("LocalNodeState") or "inactive"
    lines.append(f" Swarm: {state}")
    if state not in ("inactive", "locked"):
        lines.append(f"  NodeID: {swarm.get('NodeID', '')}")
        if swarm.get("Error"):
            lines.append(f"  Error: {swarm['Error']}")
        lines.append(f"  Is Manager: {str(bool(swarm.get('ControlAvailable'))).lower()}")
        if swarm.get("Cluster") and swarm.get("ControlAvailable") and not swarm.get("Error"):
            lines.append(f"  ClusterID: {swarm['Cluster'].get('ID', '')}")
            lines.append(f"  Managers: {swarm.get('Managers', 0)}")
            lines.append(f"  Nodes: {swarm.get('Nodes', 0)}")
        lines.append(f"  Node Address: {swarm.get('NodeAddr', '')}")
        managers = sorted(m.get("Addr", "") for m in swarm.get("RemoteManagers") or [])
        if managers:
            lines.append("  Manager Addresses:")
            lines.extend(f"   {addr}" for addr in managers)
    add("Kernel Version", "KernelVersion")
    add("Operating System", "OperatingSystem")
    add("OSType", "OSType")
    add("Architecture", "Architecture")
    add("CPUs", "NCPU")
    if data.get("MemTotal") is not None:
        lines.append(f" Total Memory: {bytes_size(data['MemTotal'])}")
    add("Name", "Name")
    add("ID", "ID")
    add("Docker Root Dir", "DockerRootDir")
    add("Debug Mode", "Debug")
    add("Experimental", "ExperimentalBuild")
    out("\n".join(lines) + "\n")
    for warning in data.get("Warnings") or []:
        err(warning)


@cli.command(context_settings=CONTEXT)
@click.option("-f", "--format", "fmt", default="", hidden=True)
@click.option("--type", "kind", type=click.Choice(["container", "network", "image"]), default=None,
              help="Return JSON for specified type")
@click.argument("refs", nargs=-1, required=True, metavar="NAME|ID...")
def inspect(fmt: str, kind: str | None, refs: tuple[str, ...]) -> None:
    """Return low-level information on shoal objects"""
    if fmt:
        fail("--format templates are not supported by shoal; use the JSON output")
    c = client()
    paths = {"container": "/containers/{}/json", "network": "/networks/{}", "image": "/images/{}/json"}
    kinds = [kind] if kind else ["container", "network", "image"]
    found: list[object] = []
    missing: list[str] = []
    for r in refs:
        for k in kinds:
            try:
                found.append(c.get(paths[k].format(ref(r))))
                break
            except DaemonError as exc:
                if exc.status != 404:
                    raise
        else:
            missing.append(r)
    out(to_json(found) + "\n")
    if missing:
        for r in missing:
            err(f"Error: No such object: {r}")
        raise Failed(1)


@cli.command(context_settings=CONTEXT)
@click.option("-H", "--host", "listen", default="unix:///run/shoal/shoal.sock", show_default=True,
              help="Socket to serve the API on")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("/var/lib/shoal"), show_default=True,
              help="Root of persistent state")
@click.option("--exec-root", type=click.Path(path_type=Path), default=Path("/run/shoal"), show_default=True,
              help="Root of runtime state (runc root, sockets)")
@click.option("--netns-prefix", default="shoal-", show_default=True, help="Prefix of container netns names")
@click.option("--bip", default=None, metavar="CIDR", help="Default bridge address (default 172.17.0.1/16)")
@click.option("--mtu", type=int, default=None, help="Default bridge MTU")
@click.option("--dns", multiple=True, metavar="IP",
              help="DNS server for containers and upstream of the embedded DNS (default: the host's resolv.conf)")
@click.option("--max-image-size", type=ByteSize(), default="20g", show_default=True,
              help="Refuse an image load whose layers expand beyond this many bytes (e.g. 512m, 20g)")
@click.option("--max-image-entries", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Refuse an image load with more tar entries than this (all layers)")
@click.option("-D", "--debug", is_flag=True, help="Enable debug logging")
@click.option("--manager-config", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Also run a swarm manager, configured by this JSON file (see manager/node.py)")
@click.option("--metrics-addr", default="", metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (as dockerd's metrics-addr)")
def daemon(listen: str, data_dir: Path, exec_root: Path, netns_prefix: str, bip: str | None,
           mtu: int | None, dns: tuple[str, ...], max_image_size: int, max_image_entries: int, debug: bool,
           manager_config: Path | None, metrics_addr: str) -> None:
    """Run the shoal daemon (one per host, like dockerd)"""
    from shoal.daemon import run_daemon  # heavy (aiohttp, pyroute2): only here

    run_daemon(host=listen, data_dir=data_dir, exec_root=exec_root, netns_prefix=netns_prefix,
               bip=bip, mtu=mtu, dns=list(dns), debug=debug,
               image_limits=(max_image_size, max_image_entries), manager_config=manager_config,
               metrics_addr=metrics_addr)
