"""`shoal network ...`: ls, inspect, create, rm, connect, disconnect, prune.

Docker's flags and output; requests go through shoal.client to the daemon's /networks API.
"""
from __future__ import annotations

import sys

import click

from shoal.cli import fast
from shoal.cli.common import Failed, client, err, inspect_each, out
from shoal.cli.format import build_ipam_config, parse_filters, parse_kv
from shoal.client import DaemonError, ref

CONTEXT = {"help_option_names": ["--help"]}


@click.group(context_settings=CONTEXT)
def network() -> None:
    """Manage networks"""


@network.command("ls", context_settings=CONTEXT)
@click.option("-f", "--filter", "filters", multiple=True, metavar="FILTER",
              help='Provide filter values (e.g. "driver=bridge")')
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs")
def ls(filters: tuple[str, ...], no_trunc: bool, quiet: bool) -> None:
    """List networks"""
    fast.network_ls(client(), filters, no_trunc, quiet)


network.add_command(ls, "list")


@network.command(context_settings=CONTEXT)
@click.option("-v", "--verbose", is_flag=True, help="Verbose output for diagnostics")
@click.argument("names", nargs=-1, required=True, metavar="NETWORK...")
def inspect(verbose: bool, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more networks"""
    inspect_each(client(), names, lambda r: f"/networks/{r}", {"verbose": True} if verbose else None)


@network.command(context_settings=CONTEXT)
@click.option("-d", "--driver", default="bridge", show_default=True, help="Driver to manage the Network")
@click.option("--subnet", multiple=True, help="Subnet in CIDR format that represents a network segment")
@click.option("--gateway", multiple=True, help="IPv4 or IPv6 Gateway for the master subnet")
@click.option("--ip-range", multiple=True, help="Allocate container ip from a sub-range")
@click.option("--ipam-driver", default="default", show_default=True, help="IP Address Management Driver")
@click.option("-o", "--opt", multiple=True, help="Set driver specific options")
@click.option("--label", multiple=True, help="Set metadata on a network")
@click.option("--internal", is_flag=True, help="Restrict external access to the network")
@click.option("--attachable", is_flag=True, help="Enable manual container attachment")
@click.option("--ingress", is_flag=True, help="Create swarm routing-mesh network")
@click.option("--ipv6", is_flag=True, help="Enable or disable IPv6 address assignment")
@click.option("--scope", default="", help="Control the network's scope")
@click.argument("name")
def create(driver: str, subnet: tuple[str, ...], gateway: tuple[str, ...], ip_range: tuple[str, ...],
           ipam_driver: str, opt: tuple[str, ...], label: tuple[str, ...], internal: bool, attachable: bool,
           ingress: bool, ipv6: bool, scope: str, name: str) -> None:
    """Create a network"""
    body = {
        "Name": name, "Driver": driver, "Scope": scope,
        "IPAM": {"Driver": ipam_driver, "Options": {}, "Config": build_ipam_config(subnet, gateway, ip_range)},
        "Internal": internal, "Attachable": attachable, "Ingress": ingress, "ConfigOnly": False, "ConfigFrom": None,
        "Options": parse_kv(opt), "Labels": parse_kv(label),
    }
    if ipv6:
        body["EnableIPv6"] = True
    answer = client().post("/networks/create", body) or {}
    if answer.get("Warning"):
        err(f"WARNING: {answer['Warning']}")
    out(f"{answer.get('Id', '')}\n")


@network.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Do not error if the network does not exist")
@click.argument("names", nargs=-1, required=True, metavar="NETWORK...")
def rm(force: bool, names: tuple[str, ...]) -> None:
    """Remove one or more networks"""
    c = client()
    failed = False
    for name in names:
        try:
            c.delete(f"/networks/{ref(name)}")
        except DaemonError as exc:
            if force and exc.status == 404:
                continue
            err(f"Error response from daemon: {exc.message}")
            failed = True
            continue
        out(f"{name}\n")
        sys.stdout.flush()
    if failed:
        raise Failed(1)


network.add_command(rm, "remove")


@network.command(context_settings=CONTEXT)
@click.option("--ip", default="", help="IPv4 address (e.g., \"172.30.100.104\")")
@click.option("--alias", multiple=True, help="Add network-scoped alias for the container")
@click.option("--driver-opt", multiple=True, help="driver options for the network")
@click.argument("net", metavar="NETWORK")
@click.argument("container", metavar="CONTAINER")
def connect(ip: str, alias: tuple[str, ...], driver_opt: tuple[str, ...], net: str, container: str) -> None:
    """Connect a container to a network"""
    endpoint: dict[str, object] = {"Aliases": list(alias) or None, "DriverOpts": parse_kv(driver_opt) or None}
    if ip:
        endpoint["IPAMConfig"] = {"IPv4Address": ip}
    client().post(f"/networks/{ref(net)}/connect", {"Container": container, "EndpointConfig": endpoint})


@network.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Force the container to disconnect from a network")
@click.argument("net", metavar="NETWORK")
@click.argument("container", metavar="CONTAINER")
def disconnect(force: bool, net: str, container: str) -> None:
    """Disconnect a container from a network"""
    client().post(f"/networks/{ref(net)}/disconnect", {"Container": container, "Force": force})


@network.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help='Provide filter values (e.g. "until=<timestamp>")')
def prune(force: bool, filters: tuple[str, ...]) -> None:
    """Remove all unused networks"""
    if not force:
        out("WARNING! This will remove all custom networks not used by at least one container.\n"
            "Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return
    query = {"filters": parse_filters(filters)} if filters else None
    answer = client().post("/networks/prune", query=query) or {}
    deleted = answer.get("NetworksDeleted") or []
    if deleted:
        out("Deleted Networks:\n" + "".join(f"{name}\n" for name in deleted))

