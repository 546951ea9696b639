"""`shoal node ...`: ls, ps, inspect [--pretty], update, promote, demote, rm — docker's requests and output
(CLIENT-SPEC §5) against the daemon's /nodes endpoints (shoal/api/routes_swarm.py)."""

from __future__ import annotations

import json

import click

from shoal.cli.common import Failed, client, err, out
from shoal.cli.format import natural_key, render_table, to_json
from shoal.client import DaemonError

CONTEXT = {"help_option_names": ["--help"]}


def _title(s: str) -> str:
    return s[:1].upper() + s[1:]


def manager_status(node: dict) -> str:
    ms = node.get("ManagerStatus")
    if not ms:
        return ""
    if ms.get("Leader"):
        return "Leader"
    return _title(ms.get("Reachability") or "")


def ls_rows(nodes: list[dict], self_id: str) -> list[list[str]]:
    """docker node ls's table, sorted by hostname as docker sorts it."""
    rows = []
    for n in sorted(nodes, key=lambda n: natural_key((n.get("Description") or {}).get("Hostname", ""))):
        rows.append([
            n["ID"] + (" *" if n["ID"] == self_id else ""),
            (n.get("Description") or {}).get("Hostname", ""),
            _title((n.get("Status") or {}).get("State", "")),
            _title((n.get("Spec") or {}).get("Availability", "")),
            manager_status(n),
            ((n.get("Description") or {}).get("Engine") or {}).get("EngineVersion", ""),
        ])
    return rows


@click.group(context_settings=CONTEXT)
def node() -> None:
    """Manage Swarm nodes"""


@node.command("ls", context_settings=CONTEXT)
@click.option("-q", "--quiet", is_flag=True, help="Only display IDs")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided")
def ls(quiet: bool, filters: tuple[str, ...]) -> None:
    """List nodes in the swarm"""
    c = client()
    query = None
    if filters:
        import json

        f: dict[str, dict[str, bool]] = {}
        for item in filters:
            k, _, v = item.partition("=")
            f.setdefault(k, {})[v] = True
        query = {"filters": json.dumps(f)}
    nodes = c.get("/nodes", query)
    if quiet:
        out("".join(n["ID"] + "\n" for n in nodes))
        return
    self_id = (c.get("/info").get("Swarm") or {}).get("NodeID", "")
    text = render_table(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"],
                        ls_rows(nodes, self_id))
    out(text)


node.add_command(ls, "list")


def _resolve(c, ref: str) -> str:  # type: ignore[no-untyped-def]
    if ref == "self":
        return (c.get("/info").get("Swarm") or {}).get("NodeID", "")
    return ref


def pretty(n: dict) -> str:
    d = n.get("Description") or {}
    st = n.get("Status") or {}
    lines = [f"ID:\t\t\t{n['ID']}"]
    if (n.get("Spec") or {}).get("Name"):
        lines.append(f"Name:\t\t\t{n['Spec']['Name']}")
    labels = (n.get("Spec") or {}).get("Labels") or {}
    if labels:
        lines.append("Labels:")
        lines += [f" - {k}={v}" for k, v in sorted(labels.items())]
    lines += [f"Hostname:              \t{d.get('Hostname', '')}", f"Joined at:             \t{_go_time(n.get('CreatedAt', ''))}",
              "Status:", f" State:\t\t\t{_title(st.get('State', ''))}",
              f" Availability:         \t{_title((n.get('Spec') or {}).get('Availability', ''))}",
              f" Address:\t\t{st.get('Addr', '')}"]
    ms = n.get("ManagerStatus")
    if ms:
        lines += ["Manager Status:", f" Address:\t\t{ms.get('Addr', '')}",
                  f" Raft Status:\t\t{_title(ms.get('Reachability', ''))}",
                  f" Leader:\t\t{'Yes' if ms.get('Leader') else 'No'}"]
    res = d.get("Resources") or {}
    plat = d.get("Platform") or {}
    lines += ["Platform:", f" Operating System:\t{plat.get('OS', '')}", f" Architecture:\t\t{plat.get('Architecture', '')}",
              "Resources:", f" CPUs:\t\t\t{(res.get('NanoCPUs') or 0) // 10**9}",
              f" Memory:\t\t{_mem(res.get('MemoryBytes') or 0)}"]
    plugins: dict[str, list[str]] = {}
    for p in (d.get("Engine") or {}).get("Plugins") or []:
        plugins.setdefault(p["Type"], []).append(p["Name"])
    if plugins:
        lines.append("Plugins:")
        lines += [f" {t}:\t\t{', '.join(sorted(names))}" for t, names in sorted(plugins.items())]
    lines.append(f"Engine Version:\t\t{(d.get('Engine') or {}).get('EngineVersion', '')}")
    tls = d.get("TLSInfo") or {}
    if tls:
        lines += ["TLS Info:", f" TrustRoot:\n{tls.get('TrustRoot', '')}", f" Issuer Subject:\t{tls.get('CertIssuerSubject', '')}",
                  f" Issuer Public Key:\t{tls.get('CertIssuerPublicKey', '')}"]
    return "\n".join(lines) + "\n"


def _go_time(iso: str) -> str:
    """RFC 3339 as docker's pretty output prints a time: 2026-12-01 19:27:40.430291712 +0000 utc."""
    return iso.replace("T", " ").rstrip("Z") + " +0000 utc" if iso.endswith("Z") else iso


def _mem(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{n}B"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@node.command("ps", context_settings=CONTEXT)
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output based on conditions provided")
@click.option("-q", "--quiet", is_flag=True, help="Only display task IDs")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output")
@click.option("--no-resolve", is_flag=True, help="Do not map IDs to Names")
@click.argument("refs", nargs=-1, metavar="[NODE...]")
def ps(filters: tuple[str, ...], quiet: bool, no_trunc: bool, no_resolve: bool, refs: tuple[str, ...]) -> None:
    """List tasks running on one or more nodes, defaults to current node"""
    from shoal.cli.service import ps_rows

    c = client()
    extra: dict[str, dict[str, bool]] = {}
    for item in filters:
        k, _, v = item.partition("=")
        extra.setdefault(k, {})[v] = True
    errors: list[str] = []
    tasks: list[dict] = []
    for ref in refs or ("self",):
        try:  # the docker CLI's order: inspect the node, then its tasks; an error is kept and the rest goes on
            found = c.get(f"/nodes/{_resolve(c, ref)}")
            tasks += c.get("/tasks", {"filters": json.dumps({**extra, "node": {found["ID"]: True}})})
        except DaemonError as e:
            errors.append(f"Error response from daemon: {e.message}")
    if not errors or tasks:
        services, names = {}, {}
        for t in tasks:
            sid = t.get("ServiceID", "")
            if sid not in services:
                try:
                    services[sid] = c.get(f"/services/{sid}", {"insertDefaults": "false"})
                except DaemonError as e:  # removed, its tasks not yet: the docker CLI shows its ID
                    if e.status != 404:
                        raise
                    services[sid] = {"ID": sid, "Spec": {"Name": sid}}
            nid = t.get("NodeID", "")
            if nid and nid not in names:
                n = c.get(f"/nodes/{nid}")
                names[nid] = (n.get("Spec") or {}).get("Name") or (n.get("Description") or {}).get("Hostname", "")
        if no_resolve:  # the docker CLI's --no-resolve: IDs where the names would be
            names = {nid: nid for nid in names}
            services = {sid: {**svc, "Spec": {**svc["Spec"], "Name": sid}} for sid, svc in services.items()}
        rows: list[list[str]] = []
        for sid in sorted(services, key=lambda i: natural_key(services[i]["Spec"]["Name"])):
            rows += ps_rows(services[sid], [t for t in tasks if t.get("ServiceID", "") == sid], names,
                            trunc=not no_trunc)
        if quiet:  # the table's ID column: truncated unless --no-trunc, as the docker CLI's
            out("".join(r[0] + "\n" for r in rows))
        else:
            out(render_table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"], rows))
    if errors:
        err("\n".join(errors))
        raise Failed(1)


@node.command(context_settings=CONTEXT)
@click.option("--pretty", "as_pretty", is_flag=True, help="Print the information in a human friendly format")
@click.argument("refs", nargs=-1, required=True, metavar="self|NODE...")
def inspect(as_pretty: bool, refs: tuple[str, ...]) -> None:
    """Display detailed information on one or more nodes"""
    c = client()
    found, missing = [], []
    for ref in refs:
        try:
            found.append(c.get(f"/nodes/{_resolve(c, ref)}"))
        except DaemonError as e:
            if e.status != 404:
                raise
            missing.append(ref)
    if as_pretty:
        out("\n\n".join(pretty(n).rstrip("\n") for n in found) + ("\n" if found else ""))
    else:
        out(to_json(found) + "\n")
    for ref in missing:
        err(f"Error: No such node: {ref}")
    if missing:
        raise Failed(1)


@node.command(context_settings=CONTEXT)
@click.option("--availability", type=click.Choice(["active", "pause", "drain"]), default=None,
              help='Availability of the node ("active", "pause", "drain")')
@click.option("--role", type=click.Choice(["worker", "manager"]), default=None, help='Role of the node ("worker", "manager")')
@click.option("--label-add", multiple=True, help="Add or update a node label (key=value)")
@click.option("--label-rm", multiple=True, help="Remove a node label if exists")
@click.argument("ref", metavar="NODE")
def update(availability: str | None, role: str | None, label_add: tuple[str, ...], label_rm: tuple[str, ...], ref: str) -> None:
    """Update a node"""
    c = client()
    n = c.get(f"/nodes/{_resolve(c, ref)}")
    spec = dict(n.get("Spec") or {})
    labels = dict(spec.get("Labels") or {})
    for item in label_add:
        k, _, v = item.partition("=")
        labels[k] = v
    for k in label_rm:
        labels.pop(k, None)
    spec["Labels"] = labels
    if availability:
        spec["Availability"] = availability
    if role:
        spec["Role"] = role
    c.post(f"/nodes/{n['ID']}/update", spec, {"version": n["Version"]["Index"]})
    out(ref + "\n")


def _set_role(refs: tuple[str, ...], role: str) -> None:
    c = client()
    for ref in refs:
        n = c.get(f"/nodes/{_resolve(c, ref)}")
        if (n.get("Spec") or {}).get("Role") == role:
            out(f"Node {n['ID']} is already a {role}.\n")
            continue
        spec = dict(n.get("Spec") or {})
        spec.setdefault("Labels", {})
        spec["Role"] = role
        c.post(f"/nodes/{n['ID']}/update", spec, {"version": n["Version"]["Index"]})
        out(f"Node {ref} promoted to a manager in the swarm.\n" if role == "manager" else f"Manager {ref} demoted in the swarm.\n")


@node.command(context_settings=CONTEXT)
@click.argument("refs", nargs=-1, required=True, metavar="NODE...")
def promote(refs: tuple[str, ...]) -> None:
    """Promote one or more nodes to manager in the swarm"""
    _set_role(refs, "manager")


@node.command(context_settings=CONTEXT)
@click.argument("refs", nargs=-1, required=True, metavar="NODE...")
def demote(refs: tuple[str, ...]) -> None:
    """Demote one or more nodes from manager in the swarm"""
    _set_role(refs, "worker")


@node.command(context_settings=CONTEXT)
@click.option("-f", "--force", is_flag=True, help="Force remove a node from the swarm")
@click.argument("refs", nargs=-1, required=True, metavar="NODE...")
def rm(force: bool, refs: tuple[str, ...]) -> None:
    """Remove one or more nodes from the swarm"""
    c = client()
    failed = False
    for ref in refs:
        try:
            c.delete(f"/nodes/{ref}", {"force": "1"} if force else None)
        except DaemonError as e:
            err(f"Error response from daemon: {e.message}")
            failed = True
            continue
        out(ref + "\n")
    if failed:
        raise Failed(1)


node.add_command(rm, "remove")


from shoal.cli.gossip import gossip as _gossip  # noqa: E402 - netdb's diagnostic, in its own module

node.add_command(_gossip, "gossip")
