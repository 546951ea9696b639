"""`shoal service ...`: create, ls, ps, inspect, scale, update, rollback, rm — the docker CLI's requests and output
(CLIENT-SPEC §6) against the daemon's /services and /tasks (shoal/api/routes_services.py). Flags are turned into a
spec by service_opts.py; the convergence display is service_progress.py."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from shoal.cli.common import Failed, client, err, out
from shoal.cli.format import UsageError, render_table, to_json
from shoal.cli.service_create import create_service
from shoal.cli.service_create import follow as _follow
from shoal.cli.service_logs import logs
from shoal.client import DaemonError

CONTEXT = {"help_option_names": ["--help"]}


@click.group(context_settings=CONTEXT)
def service() -> None:
    """Manage Swarm services"""


def _common_options(f: Any) -> Any:
    opts = [
        click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for the service to converge"),
        click.option("--replicas", type=click.IntRange(min=0), default=None, help="Number of tasks"),
        click.option("-e", "--env", multiple=True, help="Set environment variables"),
        click.option("--hostname", default=None, help="Container hostname"),
        click.option("--limit-cpu", default=None, help="Limit CPUs"),
        click.option("--limit-memory", default=None, help="Limit Memory"),
        click.option("--reserve-cpu", default=None, help="Reserve CPUs"),
        click.option("--reserve-memory", default=None, help="Reserve Memory"),
        click.option("--restart-condition", default=None, help='Restart when condition is met ("none", "on-failure", "any")'),
        click.option("--restart-delay", default=None, help="Delay between restart attempts (ns|us|ms|s|m|h)"),
        click.option("--restart-max-attempts", type=int, default=None, help="Maximum number of restarts before giving up"),
        click.option("--restart-window", default=None, help="Window used to evaluate the restart policy (ns|us|ms|s|m|h)"),
        click.option("--stop-grace-period", default=None, help="Time to wait before force killing a container (ns|us|ms|s|m|h)"),
        click.option("--endpoint-mode", default=None, help="Endpoint mode (vip or dnsrr)"),
        click.option("--update-parallelism", type=int, default=None, help="Maximum number of tasks updated simultaneously (0 to update all at once)"),
        click.option("--update-delay", default=None, help="Delay between updates (ns|us|ms|s|m|h)"),
        click.option("--update-failure-action", default=None, help='Action on update failure ("pause", "continue", "rollback")'),
        click.option("--update-monitor", default=None, help="Duration after each task update to monitor for failure (ns|us|ms|s|m|h)"),
        click.option("--update-order", default=None, help='Update order ("start-first", "stop-first")'),
        click.option("--update-max-failure-ratio", type=float, default=None, help="Failure rate to tolerate during an update"),
        click.option("--health-cmd", default=None, help="Command to run to check health"),
        click.option("--health-interval", default=None, help="Time between running the check (ms|s|m|h)"),
        click.option("--health-retries", type=int, default=None, help="Consecutive failures needed to report unhealthy"),
        click.option("--health-start-interval", default=None,
                     help="Time between running the check during the start period (ms|s|m|h)"),
        click.option("--health-start-period", default=None,
                     help="Start period for the container to initialize before counting retries towards unstable (ms|s|m|h)"),
        click.option("--health-timeout", default=None, help="Maximum time to allow one check to run (ms|s|m|h)"),
        click.option("--no-healthcheck", is_flag=True, help="Disable any container-specified HEALTHCHECK"),
        click.option("--oom-score-adj", type=int, default=None, help="Tune host's OOM preferences (-1000 to 1000)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@service.command(context_settings={**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False})
@_common_options
@click.option("--name", default=None, help="Service name")
@click.option("--mode", default="replicated", help='Service mode ("replicated", "global", "replicated-job", "global-job")')
@click.option("--max-concurrent", type=click.IntRange(min=0), default=None,
              help="Number of job tasks to run concurrently (default equal to --replicas)")
@click.option("--network", multiple=True, help="Network attachments")
@click.option("-p", "--publish", multiple=True, help="Publish a port as a node port")
@click.option("--mount", multiple=True, help="Attach a filesystem mount to the service")
@click.option("--constraint", multiple=True, help="Placement constraints")
@click.option("--placement-pref", multiple=True, help="Add a placement preference")
@click.option("--replicas-max-per-node", type=int, default=None, help="Maximum number of tasks per node (default 0 = unlimited)")
@click.option("-l", "--label", multiple=True, help="Service labels")
@click.option("--container-label", multiple=True, help="Container labels")
@click.option("--group", multiple=True, help="Set one or more supplementary user groups for the container")
@click.option("-w", "--workdir", default=None, help="Working directory inside the container")
@click.option("-u", "--user", default=None, help="Username or UID (format: <name|uid>[:<group|gid>])")
@click.argument("image")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def create(**o: Any) -> None:
    """Create a new service"""
    from shoal.cli.service_opts import create_spec

    try:
        spec = create_spec(o)
    except UsageError as e:
        raise click.UsageError(str(e)) from None
    create_service(client(), spec, o["detach"])


def _mode(s: dict[str, Any]) -> str:
    mode = s["Spec"].get("Mode") or {}
    for key, name in (("Global", "global"), ("ReplicatedJob", "replicated job"), ("GlobalJob", "global job")):
        if key in mode:
            return name
    return "replicated"


def _replicas(s: dict[str, Any]) -> str:
    """docker's REPLICAS column (its formatter): running/desired, and a job's completions."""
    st = s.get("ServiceStatus") or {}
    running, desired, done = st.get("RunningTasks", 0), st.get("DesiredTasks", 0), st.get("CompletedTasks", 0)
    mode = s["Spec"].get("Mode") or {}
    if "ReplicatedJob" in mode:
        return f"{running}/{desired} ({done}/{mode['ReplicatedJob'].get('TotalCompletions', 0)} completed)"
    if "GlobalJob" in mode:
        return f"{running}/{desired} ({done}/{desired + done} completed)"
    return f"{running}/{desired}"


def _ports(s: dict[str, Any]) -> str:
    ports = [p for p in (s.get("Endpoint") or {}).get("Ports") or [] if p.get("PublishMode", "ingress") == "ingress"]
    return ", ".join(f"*:{p['PublishedPort']}->{p['TargetPort']}/{p.get('Protocol', 'tcp')}" for p in ports)


def _image(spec: dict[str, Any]) -> str:
    image = ((spec.get("TaskTemplate") or spec).get("ContainerSpec") or {}).get("Image", "")
    return image.split("@", 1)[0]


@service.command("ls", context_settings=CONTEXT)
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided")
def ls(quiet: bool, filters: tuple[str, ...]) -> None:
    """List services"""
    c = client()
    f: dict[str, dict[str, bool]] = {}
    for item in filters:
        k, _, v = item.partition("=")
        f.setdefault(k, {})[v] = True
    query: dict[str, Any] = {"filters": json.dumps(f)} if f else {}
    if quiet:
        out("".join(s["ID"] + "\n" for s in c.get("/services", query or None)))
        return
    services = c.get("/services", {**query, "status": "true"})
    rows = []
    for s in sorted(services, key=lambda s: s["Spec"]["Name"]):
        rows.append([s["ID"][:12], s["Spec"]["Name"], _mode(s), _replicas(s), _image(s["Spec"]), _ports(s)])
    out(render_table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], rows))


service.add_command(ls, "list")


def find_service(c: Any, ref: str) -> dict[str, Any]:
    """docker's order: exact id, exact name, then id prefix."""
    try:
        return c.get(f"/services/{ref}", {"insertDefaults": "false"})
    except DaemonError as e:
        if e.status == 404:
            raise DaemonError(404, f"service {ref} not found") from None
        raise


def _ago(ts: str) -> str:
    from shoal.cli.format import parse_time
    from shoal.humanize import human_duration

    t = parse_time(ts)
    if t is None:
        return ""
    return human_duration(max(0.0, time.time() - t.timestamp())).lower() + " ago"


def _title(s: str) -> str:
    return s[:1].upper() + s[1:]


def ps_rows(service: dict[str, Any], tasks: list[dict[str, Any]], node_names: dict[str, str], trunc: bool = True) -> list[list[str]]:
    """`service ps`: per slot (node), the newest task first, older ones as ` \\_ name`."""
    name = service["Spec"]["Name"]
    groups: dict[Any, list[dict[str, Any]]] = {}
    for t in tasks:  # docker's naming: a task without a slot (global, a replicated job's slot 0) goes by its node
        groups.setdefault(t.get("Slot") or t.get("NodeID", ""), []).append(t)
    rows = []
    for key in sorted(groups, key=lambda k: (isinstance(k, str), k if isinstance(k, int) else 0, str(k))):
        group = sorted(groups[key], key=lambda t: t.get("CreatedAt", ""), reverse=True)
        for i, t in enumerate(group):
            label = f"{name}.{key}"
            st = t.get("Status") or {}
            err = st.get("Err", "")
            if trunc and len(err) > 30:
                err = '"' + err[:29] + '…"'
            ports = ", ".join(f"*:{p['PublishedPort']}->{p['TargetPort']}/{p.get('Protocol', 'tcp')}"
                              for p in (st.get("PortStatus") or {}).get("Ports") or [])
            rows.append([t["ID"][:12] if trunc else t["ID"], label if i == 0 else f" \\_ {label}", _image(t.get("Spec") or {}),
                         node_names.get(t.get("NodeID", ""), ""), _title(t.get("DesiredState", "")),
                         f"{_title(st.get('State', ''))} {_ago(st.get('Timestamp', ''))}".strip(), err, ports])
    return rows


@service.command(context_settings=CONTEXT)
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided")
@click.option("-q", "--quiet", is_flag=True, help="Only display task IDs")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output")
@click.argument("refs", nargs=-1, required=True, metavar="SERVICE...")
def ps(filters: tuple[str, ...], quiet: bool, no_trunc: bool, refs: tuple[str, ...]) -> None:
    """List the tasks of one or more services"""
    c = client()
    rows: list[list[str]] = []
    ids: list[str] = []
    missing = []
    extra: dict[str, dict[str, bool]] = {}
    for item in filters:
        k, _, v = item.partition("=")
        extra.setdefault(k, {})[v] = True
    node_names: dict[str, str] = {}
    for ref in refs:
        try:
            svc = find_service(c, ref)
        except DaemonError as e:
            if e.status != 404:
                raise
            missing.append(ref)
            continue
        tasks = c.get("/tasks", {"filters": json.dumps({**extra, "service": {svc["ID"]: True}})})
        for t in tasks:
            nid = t.get("NodeID", "")
            if nid and nid not in node_names:
                try:
                    n = c.get(f"/nodes/{nid}")
                    node_names[nid] = (n.get("Spec") or {}).get("Name") or (n.get("Description") or {}).get("Hostname", "")
                except DaemonError:
                    node_names[nid] = ""
        ids += [t["ID"] for t in tasks]
        rows += ps_rows(svc, tasks, node_names, trunc=not no_trunc)
    if missing:
        err("no such service: " + missing[0])
        raise Failed(1)
    if quiet:
        out("".join(i + "\n" for i in ids))
        return
    out(render_table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"], rows))


@service.command(context_settings=CONTEXT)
@click.option("--pretty", "as_pretty", is_flag=True, help="Print the information in a human friendly format")
@click.argument("refs", nargs=-1, required=True, metavar="SERVICE...")
def inspect(as_pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more services"""
    c = client()
    found, missing = [], []
    for ref in refs:
        try:
            found.append(c.get(f"/services/{ref}", {"insertDefaults": "true"}))
        except DaemonError as e:
            if e.status != 404:
                raise
            missing.append(ref)
    if as_pretty:
        out("\n".join(_pretty(s) for s in found))
    else:
        out(to_json(found) + "\n")
    for ref in missing:
        err(f"Error: no such service: {ref}")
    if missing:
        raise Failed(1)


def _pretty(s: dict[str, Any]) -> str:
    spec = s["Spec"]
    lines = ["", f"ID:\t\t{s['ID']}", f"Name:\t\t{spec['Name']}"]
    if _mode(s) == "global":
        lines.append("Service Mode:\tGlobal")
    elif _mode(s) == "replicated":
        lines += ["Service Mode:\tReplicated", f" Replicas:\t{spec['Mode']['Replicated'].get('Replicas', 0)}"]
    else:
        lines.append("Service Mode:")  # the docker CLI's template names no job mode
    placement = (spec.get("TaskTemplate") or {}).get("Placement") or {}
    cons = placement.get("Constraints")
    prefs = ["spread=" + p["Spread"].get("SpreadDescriptor", "") for p in placement.get("Preferences") or [] if p.get("Spread")]
    if cons or prefs:
        lines.append("Placement:")
    if cons:
        lines.append(f" Constraints:\t[{' '.join(cons)}]")
    if prefs:
        lines.append(f" Preferences:   [{' '.join(prefs)}]")  # docker's template: three spaces, no tab
    lines += ["ContainerSpec:", f" Image:\t\t{_image(spec)}"]
    args = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Args")
    if args:
        lines.append(f" Args:\t\t{' '.join(args)}")
    lines.append(f"Endpoint Mode:\t{(spec.get('EndpointSpec') or {}).get('Mode', 'vip')}")
    ports = (s.get("Endpoint") or {}).get("Ports") or []
    if ports:
        lines.append("Ports:")
        for p in ports:
            lines += [f" PublishedPort = {p['PublishedPort']}", f"  Protocol = {p.get('Protocol', 'tcp')}",
                      f"  TargetPort = {p['TargetPort']}", f"  PublishMode = {p.get('PublishMode', 'ingress')}"]
    return "\n".join(lines) + "\n\n"


@service.command(context_settings=CONTEXT)
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for the service to converge")
@click.argument("pairs", nargs=-1, required=True, metavar="SERVICE=REPLICAS...")
def scale(detach: bool, pairs: tuple[str, ...]) -> None:
    """Scale one or multiple replicated services"""
    c = client()
    failed = False
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not value.isdigit():
            raise click.UsageError(f'invalid scale specifier \'{pair}\'.\nSee \'shoal service scale --help\'.\n\n'
                                   "Usage:  shoal service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]")
        try:
            svc = find_service(c, name)
            spec = svc["Spec"]
            mode = spec.get("Mode") or {}
            if "Replicated" in mode:
                mode["Replicated"]["Replicas"] = int(value)
            elif "ReplicatedJob" in mode:  # the docker CLI's scale: a new run with that many completions
                mode["ReplicatedJob"]["TotalCompletions"] = int(value)
            else:
                raise DaemonError(400, "scale can only be used with replicated or replicated-job mode")
            c.post(f"/services/{svc['ID']}/update", spec, {"version": svc["Version"]["Index"]})
        except DaemonError as e:
            err(f"{name}: {e.message}" if e.status == 400 else f"Error response from daemon: {e.message}")
            failed = True
            continue
        out(f"{name} scaled to {value}\n")
        _follow(c, svc["ID"], detach)
    if failed:
        raise Failed(1)


@service.command(context_settings=CONTEXT)
@_common_options
@click.option("--image", default=None, help="Service image tag")
@click.option("--args", default=None, help="Service command args")
@click.option("--env-add", multiple=True, help="Add or update an environment variable")
@click.option("--env-rm", multiple=True, help="Remove an environment variable")
@click.option("--publish-add", multiple=True, help="Add or update a published port")
@click.option("--publish-rm", multiple=True, help="Remove a published port by its target port")
@click.option("--mount-add", multiple=True, help="Add or update a mount on a service")
@click.option("--mount-rm", multiple=True, help="Remove a mount by its target path")
@click.option("--constraint-add", multiple=True, help="Add or update a placement constraint")
@click.option("--constraint-rm", multiple=True, help="Remove a constraint")
@click.option("--group-add", multiple=True, help="Add an additional supplementary user group to the container")
@click.option("--group-rm", multiple=True, help="Remove a previously added supplementary user group from the container")
@click.option("--placement-pref-add", multiple=True, help="Add a placement preference")
@click.option("--placement-pref-rm", multiple=True, help="Remove a placement preference")
@click.option("--network-add", multiple=True, help="Add a network")
@click.option("--network-rm", multiple=True, help="Remove a network")
@click.option("--force", is_flag=True, help="Force update even if no changes require it")
@click.option("--rollback", "do_rollback", is_flag=True, help="Rollback to previous specification")
@click.argument("ref", metavar="SERVICE")
def update(ref: str, do_rollback: bool, **o: Any) -> None:
    """Update a service"""
    from shoal.cli.service_opts import parse_network, update_spec

    c = client()
    svc = find_service(c, ref)
    if do_rollback:
        c.post(f"/services/{svc['ID']}/update", {}, {"version": svc["Version"]["Index"], "rollback": "previous"})
    else:
        try:
            spec = update_spec(svc["Spec"], o)
        except UsageError as e:
            raise click.UsageError(str(e)) from None
        nets = spec["TaskTemplate"].get("Networks") or []
        added = {parse_network(x)["Target"] for x in o.get("network_add") or ()}
        for n in nets:
            if n["Target"] in added:
                n["Target"] = c.get(f"/networks/{n['Target']}", {"scope": "swarm"})["Id"]
        c.post(f"/services/{svc['ID']}/update", spec, {"version": svc["Version"]["Index"], "registryAuthFrom": "spec"})
    out(ref + "\n")
    _follow(c, svc["ID"], o["detach"])


@service.command(context_settings=CONTEXT)
@click.option("-d", "--detach", is_flag=True, help="Exit immediately instead of waiting for the service to converge")
@click.argument("ref", metavar="SERVICE")
def rollback(detach: bool, ref: str) -> None:
    """Revert changes to a service's configuration"""
    c = client()
    svc = find_service(c, ref)
    c.post(f"/services/{svc['ID']}/update", {}, {"version": svc["Version"]["Index"], "rollback": "previous"})
    out(ref + "\n")
    _follow(c, svc["ID"], detach)


@service.command(context_settings=CONTEXT)
@click.argument("refs", nargs=-1, required=True, metavar="SERVICE...")
def rm(refs: tuple[str, ...]) -> None:
    """Remove one or more services"""
    c = client()
    failed = False
    for ref in refs:
        try:
            c.delete(f"/services/{ref}")
        except DaemonError as e:
            err(f"Error response from daemon: {e.message}")
            failed = True
            continue
        out(ref + "\n")
    if failed:
        raise Failed(1)


service.add_command(rm, "remove")
service.add_command(logs)  # shoal/cli/service_logs.py: the docker CLI's line formatting
