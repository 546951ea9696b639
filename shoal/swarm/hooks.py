"""What the node does around swarm membership that belongs to other parts: its hostname as the swarm shows it,
and docker_gwbridge after init/join (agent/network/gwbridge.py, when present). Called from shoal/daemon.py."""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import Any

log = logging.getLogger(__name__)


def node_hostname(engine: Any) -> str:
    """The daemon's node name (the lab sets one per host) or the host's name, as Description.Hostname."""
    name = getattr(engine, "node_name", None) or os.environ.get("SHOAL_NODE_NAME")
    if name:
        return name
    # a lab host shares the machine's UTS namespace: until the lab gives each daemon a --node-name, the
    # host's name is in its namespace prefix (shoal-<lab>-<host>-)
    prefix = getattr(getattr(engine, "options", None), "netns_prefix", "") or ""
    m = re.match(r"^shoal-.+-(h\d+)-$", prefix)
    return m.group(1) if m else socket.gethostname()


async def on_joined(engine: Any) -> None:
    """docker_gwbridge on every node at init/join (issue 10 item 6, agent/network/gwbridge.py)."""
    try:
        from agent.network import gwbridge  # type: ignore[attr-defined]
    except ImportError:
        return  # not there yet: the hook is here for it
    ensure = getattr(gwbridge, "ensure_gwbridge", None)
    if ensure is None:
        return
    try:
        result = ensure(engine)
        if hasattr(result, "__await__"):
            await result
    except Exception:
        log.exception("docker_gwbridge could not be set up")
    try:  # the overlay driver (issue 11 item 2): shoal/swarm/overlay.py
        from shoal.swarm.overlay import enable_overlay

        await enable_overlay(engine)
    except Exception:
        log.exception("the overlay driver could not be enabled")
    try:  # gossip <-> overlay driver, and attachments released with their containers (shoal/swarm/container_attach.py)
        from shoal.swarm import container_attach, overlay_gossip

        overlay_gossip.ensure_wired(engine)
        container_attach.start_watcher(engine)
    except Exception:
        log.exception("the overlay driver could not be wired to gossip")
    try:  # containers on swarm overlays whose restart at boot waited for the overlay driver (shoal/engine/restart.py)
        from shoal.engine.restart import restart_deferred

        restart_deferred(engine)
    except Exception:
        log.exception("the restarts held back for the overlay driver could not be started")
