"""Pure decisions of the overlay data plane: object names, the MTU, what is stale at start.
vxlan/dataplane.py and vxlan/kernel.py act on them; tests/unit/test_vxlan_plan.py checks them."""
from __future__ import annotations

from dataclasses import dataclass

from vxlan.types import VXLAN_OVERHEAD, OverlaySpec

IFNAMSIZ = 15
BRIDGE = "br0"  # inside the network's own namespace: no clash with anything
MIN_MTU = 68
VNI_MAX = (1 << 24) - 1
MARK = "shoal-overlay:"  # ifalias prefix of a VXLAN device while it sits in the host namespace


@dataclass(slots=True, frozen=True)
class NetworkNames:
    netns: str  # the network's namespace: "<prefix>ov-<vni>-<id[:8]>"
    vxlan: str  # the VXLAN device, same name in the host namespace (briefly) and in the network's
    mark: str  # its ifalias: proves a leftover in the host namespace is ours


def names(prefix: str, spec: OverlaySpec) -> NetworkNames:
    check_spec(spec)
    short = spec.network_id[:8]
    return NetworkNames(
        netns=f"{prefix}ov-{spec.vni}-{short}",
        vxlan=f"vx-{spec.vni:06x}-{spec.network_id[:5]}",
        mark=f"{MARK}{prefix}|{spec.network_id}",
    )


def overlay_mtu(spec: OverlaySpec, underlay_mtu: int) -> int:
    """spec.mtu when given, else the underlay's MTU less the VXLAN overhead (never a fixed 1450:
    moby #24906's black hole comes from a fixed value on a smaller underlay)."""
    mtu = spec.mtu if spec.mtu is not None else underlay_mtu - VXLAN_OVERHEAD
    if not MIN_MTU <= mtu <= 65535:
        raise ValueError(f"invalid overlay mtu {mtu} for network {spec.name} (underlay mtu {underlay_mtu})")
    return mtu


def check_spec(spec: OverlaySpec) -> None:
    """Refuses a spec the kernel cannot serve, naming the bad value."""
    if not 1 <= spec.vni <= VNI_MAX:
        raise ValueError(f"invalid VNI {spec.vni} for network {spec.name}: must be 1..{VNI_MAX}")
    if len(spec.network_id) < 8 or not spec.network_id.isalnum():
        raise ValueError(f"invalid network id {spec.network_id!r}: at least 8 letters or digits")
    if spec.gateway.ip not in spec.subnet or spec.gateway.network != spec.subnet:
        raise ValueError(f"invalid gateway {spec.gateway} for network {spec.name}: not in subnet {spec.subnet}")
    if not 1 <= spec.port <= 65535:
        raise ValueError(f"invalid VXLAN port {spec.port} for network {spec.name}")


def stale_namespaces(present: list[str], prefix: str, live: set[str]) -> list[str]:
    """Our overlay namespaces (named `<prefix>ov-...`) that no live network holds: a previous run's."""
    return sorted(n for n in present if n.startswith(f"{prefix}ov-") and n not in live)


def stale_vxlan_links(links: dict[str, str], prefix: str, live: set[str]) -> list[str]:
    """VXLAN devices of the host namespace (name -> ifalias) carrying our mark for this prefix whose
    network is not live: a crash between creating a device and moving it into its namespace."""
    stale = []
    for name, alias in links.items():
        owner, bar, network_id = alias.rpartition("|")
        if bar and owner == f"{MARK}{prefix}" and network_id not in live:
            stale.append(name)
    return sorted(stale)
