"""`shoal swarm ...`: init, join, join-token, leave, update, ca — docker's flags, requests and output
(CLIENT-SPEC §4) against the daemon's /swarm endpoints (shoal/api/routes_swarm.py)."""

from __future__ import annotations

import hashlib
import re

import click

from shoal.cli.common import client, fail, out
from shoal.client import DaemonError

CONTEXT = {"help_option_names": ["--help"]}
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> int:
    """A Go duration ("5s", "1h30m", "90ms") in nanoseconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise click.BadParameter(f'time: invalid duration "{text}"')
    return int(sum(float(n) * _UNITS[u] for n, u in parts) * 1e9)


def _spec(heartbeat: str | None, cert_expiry: str | None) -> dict:
    spec: dict = {"Labels": None, "Orchestration": {}, "Raft": {"ElectionTick": 0, "HeartbeatTick": 0},
                  "Dispatcher": {}, "CAConfig": {}, "TaskDefaults": {}, "EncryptionConfig": {"AutoLockManagers": False}}
    if heartbeat:
        spec["Dispatcher"]["HeartbeatPeriod"] = parse_duration(heartbeat)
    if cert_expiry:
        spec["CAConfig"]["NodeCertExpiry"] = parse_duration(cert_expiry)
    return spec


@click.group(context_settings=CONTEXT)
def swarm() -> None:
    """Manage Swarm"""


@swarm.command(context_settings=CONTEXT)
@click.option("--advertise-addr", default="", help="Advertised address (format: <ip|interface>[:port])")
@click.option("--listen-addr", default="0.0.0.0:2377", help="Listen address (format: <ip|interface>[:port])")
@click.option("--data-path-addr", default="", help="Address or interface to use for data path traffic")
@click.option("--force-new-cluster", is_flag=True, help="Force create a new cluster from current state")
@click.option("--dispatcher-heartbeat", default=None, help="Dispatcher heartbeat period (ns|us|ms|s|m|h) (default 5s)")
@click.option("--cert-expiry", default=None, help="Validity period for node certificates (ns|us|ms|s|m|h) (default 2160h0m0s)")
@click.option("--availability", default="active", help='Availability of the node ("active", "pause", "drain")')
@click.option("--default-addr-pool", multiple=True, help="default address pool in CIDR format")
@click.option("--default-addr-pool-mask-length", default=24, type=int, show_default=True,
              help="default address pool subnet mask length")
def init(advertise_addr: str, listen_addr: str, data_path_addr: str, force_new_cluster: bool,
         dispatcher_heartbeat: str | None, cert_expiry: str | None, availability: str,
         default_addr_pool: tuple[str, ...], default_addr_pool_mask_length: int) -> None:
    """Initialize a swarm"""
    c = client()
    body = {"ListenAddr": listen_addr, "AdvertiseAddr": advertise_addr, "DataPathAddr": data_path_addr,
            "DataPathPort": 0, "ForceNewCluster": force_new_cluster, "Spec": _spec(dispatcher_heartbeat, cert_expiry),
            "AutoLockManagers": False, "Availability": availability,
            "DefaultAddrPool": list(default_addr_pool), "SubnetSize": default_addr_pool_mask_length}
    try:
        node_id = c.post("/swarm/init", body)
    except DaemonError as e:
        if "could not choose an IP address to advertise" in e.message:
            fail(f"Error response from daemon: {e.message} - specify one with --advertise-addr")
        raise
    out(f"Swarm initialized: current node ({node_id}) is now a manager.\n\n")
    node = c.get(f"/nodes/{node_id}")
    addr = (node.get("ManagerStatus") or {}).get("Addr")
    if addr:
        token = c.get("/swarm")["JoinTokens"]["Worker"]
        out(f"To add a worker to this swarm, run the following command:\n\n    shoal swarm join --token {token} {addr}\n\n"
            "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n")


@swarm.command(context_settings=CONTEXT)
@click.option("--token", default="", help="Token for entry into the swarm")
@click.option("--advertise-addr", default="", help="Advertised address (format: <ip|interface>[:port])")
@click.option("--listen-addr", default="0.0.0.0:2377", help="Listen address (format: <ip|interface>[:port])")
@click.option("--data-path-addr", default="", help="Address or interface to use for data path traffic")
@click.option("--availability", default="active", help='Availability of the node ("active", "pause", "drain")')
@click.argument("remote", metavar="HOST:PORT")
def join(token: str, advertise_addr: str, listen_addr: str, data_path_addr: str, availability: str, remote: str) -> None:
    """Join a swarm as a node and/or manager"""
    c = client()
    c.post("/swarm/join", {"ListenAddr": listen_addr, "AdvertiseAddr": advertise_addr, "DataPathAddr": data_path_addr,
                           "RemoteAddrs": [remote], "JoinToken": token, "Availability": availability})
    info = c.get("/info")
    role = "manager" if (info.get("Swarm") or {}).get("ControlAvailable") else "worker"
    out(f"This node joined a swarm as a {role}.\n")


@swarm.command("join-token", context_settings=CONTEXT)
@click.option("-q", "--quiet", is_flag=True, help="Only display token")
@click.option("--rotate", is_flag=True, help="Rotate join token")
@click.argument("role", type=click.Choice(["worker", "manager"]), metavar="(worker|manager)")
def join_token(quiet: bool, rotate: bool, role: str) -> None:
    """Manage join tokens"""
    c = client()
    if rotate:
        sw = c.get("/swarm")
        c.post("/swarm/update", sw.get("Spec") or {}, {
            "version": sw["Version"]["Index"], "rotateWorkerToken": str(role == "worker").lower(),
            "rotateManagerToken": str(role == "manager").lower(), "rotateManagerUnlockKey": "false"})
        if not quiet:
            out(f"Successfully rotated {role} join token.\n\n")
    sw = c.get("/swarm")
    token = sw["JoinTokens"]["Worker" if role == "worker" else "Manager"]
    if quiet:
        out(token + "\n")
        return
    info = c.get("/info")
    node = c.get(f"/nodes/{info['Swarm']['NodeID']}")
    addr = (node.get("ManagerStatus") or {}).get("Addr", "")
    out(f"To add a {role} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {addr}\n\n")


@swarm.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Force this node to leave the swarm, ignoring warnings")
def leave(force: bool) -> None:
    """Leave the swarm"""
    client().post("/swarm/leave", None, {"force": "1"} if force else None)
    out("Node left the swarm.\n")


@swarm.command(context_settings=CONTEXT)
@click.option("--dispatcher-heartbeat", default=None, help="Dispatcher heartbeat period (ns|us|ms|s|m|h)")
@click.option("--cert-expiry", default=None, help="Validity period for node certificates (ns|us|ms|s|m|h)")
def update(dispatcher_heartbeat: str | None, cert_expiry: str | None) -> None:
    """Update the swarm"""
    c = client()
    sw = c.get("/swarm")
    spec = sw.get("Spec") or {}
    if dispatcher_heartbeat:
        spec.setdefault("Dispatcher", {})["HeartbeatPeriod"] = parse_duration(dispatcher_heartbeat)
    if cert_expiry:
        spec.setdefault("CAConfig", {})["NodeCertExpiry"] = parse_duration(cert_expiry)
    c.post("/swarm/update", spec, {"version": sw["Version"]["Index"]})
    out("Swarm updated.\n")


@swarm.command(context_settings=CONTEXT)
@click.option("-q", "--quiet", is_flag=True, help="Only print the root CA digest")
def ca(quiet: bool) -> None:
    """Display the root CA certificate and its digest"""
    sw = client().get("/swarm")
    pem = ((sw.get("TLSInfo") or {}).get("TrustRoot") or "").encode()
    digest = "sha256:" + hashlib.sha256(pem).hexdigest()
    if quiet:
        out(digest + "\n")
    else:
        out(pem.decode().rstrip("\n") + "\n" + digest + "\n")
