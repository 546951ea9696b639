"""MAC addresses for container interfaces, derived from the IPv4 address as Docker does.
Used by bridge endpoints (agent.network.drivers.bridge) and overlay peers (vxlan); pure, in common/."""
from __future__ import annotations

from ipaddress import IPv4Address

# 02 = locally administered unicast; 42 is Docker's fixed second octet.
_PREFIX = b"\x02\x42"


def mac_from_ip(ip: str | IPv4Address) -> str:
    """Return Docker's MAC for an IPv4 address: 02:42 followed by the four address bytes."""
    packed = _PREFIX + IPv4Address(ip).packed
    return ":".join(f"{b:02x}" for b in packed)
