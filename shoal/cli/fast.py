"""The list commands (network ls, ps, images) and a click-free fast path that runs them.

shoal.cli.main tries `run_fast` before importing click (~30 ms of start-up); argv it does
not fully understand (--help, unknown or combined flags) goes to the click commands in
shoal.cli.network / container / image, which call the same functions below.
"""
from __future__ import annotations

import time
TYPE_CHECKING = False  # not `from typing import ...`: typing costs ~3 ms of CLI start-up

from shoal.cli.common import out
from shoal.cli.limits import FLAGS as LIMIT_FLAGS
from shoal.cli.format import container_rows, image_rows, network_rows, parse_filters, render_table
from shoal.client import Client

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


def network_ls(c: Client, filters: Sequence[str], no_trunc: bool, quiet: bool) -> None:
    query = {"filters": parse_filters(filters)} if filters else None
    rows = network_rows(c.get("/networks", query) or [], trunc=not no_trunc)
    if quiet:
        out("".join(row[0] + "\n" for row in rows))
    else:
        out(render_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows))


def container_ls(c: Client, show_all: bool, filters: Sequence[str], last: int, latest: bool, no_trunc: bool,
                 quiet: bool) -> None:
    limit = 1 if latest else last
    query: dict[str, Any] = {"all": True if show_all or limit > 0 else None, "limit": limit if limit > 0 else None}
    if filters:
        query["filters"] = parse_filters(filters)
    rows = container_rows(c.get("/containers/json", query) or [], time.time(), trunc=not no_trunc)
    if quiet:
        out("".join(row[0] + "\n" for row in rows))
    else:
        out(render_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], rows))


def image_ls(c: Client, show_all: bool, filters: Sequence[str], no_trunc: bool, quiet: bool,
             repository: str | None = None) -> None:
    parsed = parse_filters(filters)
    if repository:
        parsed.setdefault("reference", {})[repository] = True
    query = {"all": show_all or None, "filters": parsed or None}
    rows = image_rows(c.get("/images/json", query) or [], time.time(), trunc=not no_trunc)
    if quiet:
        seen: list[str] = []
        for row in rows:
            if row[2] not in seen:  # one line per image, not per tag
                seen.append(row[2])
        out("".join(f"{i}\n" for i in seen))
    else:
        out(render_table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows))


# Per fast command: its runner and its flags (flag -> (parameter, takes a value)). A unit
# test checks these against the click commands' options so the two cannot drift apart.
FLAGS_NETWORK_LS = {"-f": ("filters", True), "--filter": ("filters", True), "--no-trunc": ("no_trunc", False),
                    "-q": ("quiet", False), "--quiet": ("quiet", False)}
FLAGS_PS = {"-a": ("show_all", False), "--all": ("show_all", False), "-f": ("filters", True),
            "--filter": ("filters", True), "--no-trunc": ("no_trunc", False), "-q": ("quiet", False),
            "--quiet": ("quiet", False), "-l": ("latest", False), "--latest": ("latest", False)}
FLAGS_IMAGE_LS = {"-a": ("show_all", False), "--all": ("show_all", False), "-f": ("filters", True),
                  "--filter": ("filters", True), "--no-trunc": ("no_trunc", False), "-q": ("quiet", False),
                  "--quiet": ("quiet", False)}


def _ps(c: Client, p: dict[str, Any]) -> None:
    container_ls(c, p["show_all"], p["filters"], -1, p["latest"], p["no_trunc"], p["quiet"])


def _images(c: Client, p: dict[str, Any]) -> None:
    image_ls(c, p["show_all"], p["filters"], p["no_trunc"], p["quiet"])


FAST: dict[tuple[str, ...], tuple[dict[str, tuple[str, bool]], Callable[[Client, dict[str, Any]], None]]] = {
    ("network", "ls"): (FLAGS_NETWORK_LS, lambda c, p: network_ls(c, p["filters"], p["no_trunc"], p["quiet"])),
    ("network", "list"): (FLAGS_NETWORK_LS, lambda c, p: network_ls(c, p["filters"], p["no_trunc"], p["quiet"])),
    ("ps",): (FLAGS_PS, _ps),
    ("container", "ls"): (FLAGS_PS, _ps),
    ("container", "ps"): (FLAGS_PS, _ps),
    ("images",): (FLAGS_IMAGE_LS, _images),
    ("image", "ls"): (FLAGS_IMAGE_LS, _images),
}


# `run` takes the most common flags here too; IMAGE and the command follow the flags.
FLAGS_RUN = {"-d": ("detach", False), "--detach": ("detach", False), "--rm": ("remove", False),
             "--name": ("name", True), "--network": ("network", True), "--net": ("network", True),
             "-h": ("hostname", True), "--hostname": ("hostname", True), "-e": ("env", True),
             "--env": ("env", True), "-l": ("label", True), "--label": ("label", True),
             "-p": ("publish", True), "--publish": ("publish", True), "-P": ("publish_all", False),
             "--publish-all": ("publish_all", False), "--expose": ("expose", True), "--ip": ("ip", True),
             "--network-alias": ("network_alias", True), "--link": ("link", True), "-w": ("workdir", True),
             "--workdir": ("workdir", True), "-u": ("user", True), "--user": ("user", True),
             "-i": ("interactive", False), "--interactive": ("interactive", False), "-t": ("tty", False),
             "--tty": ("tty", False),
             "--detach-keys": ("detach_keys", True), "--log-opt": ("log_opt", True)}
FLAGS_RUN.update({name: (param, True) for names, param, *_ in LIMIT_FLAGS for name in names})  # --memory, --cpus...
SINGLE_VALUED = ("name", "network", "hostname", "ip", "workdir", "user", "detach_keys")


def _run(c: Client, p: dict[str, Any]) -> None:
    from shoal.cli.common import Failed, err
    from shoal.cli.limits import parse_texts
    from shoal.cli.runner import run_container

    single = {k: (p[k][-1] if p[k] else "") for k in SINGLE_VALUED}
    try:
        host_config = parse_texts(p)
    except ValueError as exc:
        err(f"shoal: {exc}\n\nRun 'shoal run --help' for more information")
        raise Failed(125) from None
    run_container(c, p["detach"], p["remove"], single["name"], single["network"], single["hostname"], p["env"],
                  p["label"], None, p["publish"], p["publish_all"], p["expose"], single["ip"], p["network_alias"],
                  p["link"], single["workdir"], single["user"], p["positional"][0], p["positional"][1:],
                  interactive=p["interactive"], tty=p["tty"], detach_keys=single["detach_keys"],
                  log_opt=p["log_opt"], host_config=host_config)


# `service create` takes its common flags here (keys: the click parameter names); a value the click command would
# refuse (a bad --replicas, a flag create_spec rejects) goes back to click for its usage message.
FLAGS_SERVICE_CREATE = {"-d": ("detach", False), "--detach": ("detach", False), "--replicas": ("replicas", True),
                        "--name": ("name", True), "--mode": ("mode", True), "--network": ("network", True),
                        "-p": ("publish", True), "--publish": ("publish", True), "-e": ("env", True),
                        "--env": ("env", True), "--hostname": ("hostname", True), "--constraint": ("constraint", True),
                        "-l": ("label", True), "--label": ("label", True), "--container-label": ("container_label", True),
                        "--mount": ("mount", True), "--endpoint-mode": ("endpoint_mode", True),
                        "-w": ("workdir", True), "--workdir": ("workdir", True), "-u": ("user", True),
                        "--user": ("user", True), "--limit-cpu": ("limit_cpu", True),
                        "--limit-memory": ("limit_memory", True), "--reserve-cpu": ("reserve_cpu", True),
                        "--reserve-memory": ("reserve_memory", True), "--restart-condition": ("restart_condition", True),
                        "--restart-delay": ("restart_delay", True), "--restart-window": ("restart_window", True),
                        "--stop-grace-period": ("stop_grace_period", True), "--update-delay": ("update_delay", True),
                        "--update-failure-action": ("update_failure_action", True),
                        "--update-monitor": ("update_monitor", True), "--update-order": ("update_order", True)}
MULTIPLE_SERVICE_CREATE = ("network", "publish", "env", "constraint", "label", "container_label", "mount")


class NotFast(Exception):
    """The fast path met something only the click command handles (raised before any request): run that instead."""


def service_create_options(p: dict[str, Any]) -> dict[str, Any]:
    """The click command's parameters from the fast parse (NotFast for a value click would refuse)."""
    o: dict[str, Any] = {"detach": p["detach"], "image": p["positional"][0], "args": tuple(p["positional"][1:])}
    for name, takes in FLAGS_SERVICE_CREATE.values():
        if takes and name not in o:
            o[name] = tuple(p[name]) if name in MULTIPLE_SERVICE_CREATE else (p[name][-1] if p[name] else None)
    if o["replicas"] is not None:
        text = o["replicas"]
        if not (text.isascii() and text.isdigit()):
            raise NotFast(f"--replicas {text!r}")
        o["replicas"] = int(text)
    o["mode"] = o["mode"] or "replicated"
    return o


def _service_create(c: Client, p: dict[str, Any]) -> None:
    from shoal.cli.format import UsageError
    from shoal.cli.service_create import create_service
    from shoal.cli.service_opts import create_spec

    o = service_create_options(p)
    try:
        spec = create_spec(o)  # every flag checked before a request: a bad one is click's to report
    except UsageError as exc:
        raise NotFast(str(exc)) from None
    create_service(c, spec, o["detach"])


POSITIONAL: dict[tuple[str, ...], tuple[dict[str, tuple[str, bool]], Callable[[Client, dict[str, Any]], None]]] = {
    ("run",): (FLAGS_RUN, _run),
    ("container", "run"): (FLAGS_RUN, _run),
    ("service", "create"): (FLAGS_SERVICE_CREATE, _service_create),
}


def parse_fast(argv: Sequence[str]) -> tuple[str | None, Callable[[Client, dict[str, Any]], None], dict[str, Any]] | None:
    """(host, runner, params) for argv the fast path fully understands, else None."""
    host = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg in ("-H", "--host") and i + 1 < len(argv):
            host, i = argv[i + 1], i + 2
        elif arg.startswith("--host="):
            host, i = arg[len("--host="):], i + 1
        else:
            return None
    rest = argv[i:]
    positional = False
    for words, (flags, runner) in [*FAST.items(), *POSITIONAL.items()]:
        if tuple(rest[:len(words)]) == words:
            positional = words in POSITIONAL
            break
    else:
        return None
    params: dict[str, Any] = {name: [] if takes else False for name, takes in flags.values()}
    args = rest[len(words):]
    j = 0
    while j < len(args):
        arg = args[j]
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and eq and name in flags and flags[name][1]:
            params[flags[name][0]].append(value)
        elif arg in flags and flags[arg][1] and j + 1 < len(args):
            params[flags[arg][0]].append(args[j + 1])
            j += 1
        elif arg in flags and not flags[arg][1]:
            params[flags[arg][0]] = True
        elif positional and not arg.startswith("-"):
            params["positional"] = list(args[j:])  # IMAGE [COMMAND...]: options end here
            return host, runner, params
        else:
            return None  # positional, --help, combined short flags, typos: let click decide
        j += 1
    if positional:
        return None  # no IMAGE: click prints the usage error
    return host, runner, params
