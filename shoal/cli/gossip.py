"""`shoal node gossip`: the gossip members this node sees (state, incarnation, address) and its overlay networks'
peer and entry counts, from GET /shoal/gossip (shoal/api/routes_gossip.py). Registered by shoal/cli/node.py."""

from __future__ import annotations

from typing import Any

import click

from shoal.cli.common import client, out
from shoal.cli.format import render_table, to_json

CONTEXT = {"help_option_names": ["--help"]}


def render(status: dict[str, Any]) -> str:
    if status.get("Running"):
        head = (f"Gossip: running on {status.get('Addr', '')}, {status.get('Keys', 0)} keys "
                f"(lamport {status.get('KeyLamport', 0)})\n")
    else:
        head = f"Gossip: not running: {status.get('Error', '')}\n"
    me = status.get("NodeID", "")
    rows = [[m["Name"] + (" *" if m["Name"] == me else ""), f"{m['Addr']}:{m['Port']}", m["State"], str(m["Incarnation"])]
            for m in status.get("Members") or []]
    text = head + render_table(["NODE", "ADDRESS", "STATE", "INCARNATION"], rows)
    nets = status.get("Networks") or []
    if nets:
        text += "\n" + render_table(["NETWORK", "PEERS", "ENTRIES"], [[n["ID"], str(n["Peers"]), str(n["Entries"])] for n in nets])
    return text


@click.command("gossip", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's JSON")
def gossip(as_json: bool) -> None:
    """Show the gossip members this node sees and their states"""
    status = client().get("/shoal/gossip")
    out(to_json(status) + "\n" if as_json else render(status))
