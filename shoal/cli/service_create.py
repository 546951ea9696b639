"""`service create` without click: the spec's networks resolved, the request, the progress
display. Shared by the click command (shoal/cli/service.py) and the fast path (shoal/cli/fast.py), which runs a
common `service create` without importing click (~50 ms of the command's start-up)."""

from __future__ import annotations

TYPE_CHECKING = False  # not `from typing import ...`: typing costs ~3 ms of CLI start-up

from shoal.cli.common import Failed, err, out

if TYPE_CHECKING:
    from typing import Any

    from shoal.client import Client


def follow(c: Client, service_id: str, detach: bool) -> None:
    """The convergence display until the service converged, unless detached."""
    if detach:
        return
    from shoal.cli.service_progress import follow as follow_progress

    try:
        follow_progress(c, service_id)
    except RuntimeError as e:
        err(str(e))
        raise Failed(1) from None


def create_service(c: Client, spec: dict[str, Any], detach: bool) -> None:
    """Create the service of this spec (shoal.cli.service_opts.create_spec: its networks named as the user gave them)
    and follow it unless detached."""
    for i, net in enumerate(spec["TaskTemplate"].get("Networks") or []):
        spec["TaskTemplate"]["Networks"][i]["Target"] = c.get(f"/networks/{net['Target']}", {"scope": "swarm"})["Id"]
    created = c.post("/services/create", spec)
    out(created["ID"] + "\n")
    follow(c, created["ID"], detach)
