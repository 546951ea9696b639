"""Read and write kernel sysctls of the current network namespace through /proc/sys.
Used by firewall.enable_ip_forward and by drivers that tune per-interface settings."""
from __future__ import annotations

from pathlib import Path

PROC_SYS = Path("/proc/sys")


def sysctl_path(key: str) -> Path:
    """/proc/sys path for a dotted key such as net.ipv4.ip_forward."""
    parts = key.split(".")
    if not key or any(not p or p in ("..", ".") or "/" in p for p in parts):
        raise ValueError(f"invalid sysctl key {key!r}")
    return PROC_SYS.joinpath(*parts)


def read_sysctl(key: str) -> str:
    return sysctl_path(key).read_text().strip()


def write_sysctl(key: str, value: str) -> None:
    """Set the value; skipped when it already holds it (writes can be refused on read-only /proc)."""
    path = sysctl_path(key)
    if path.read_text().strip() == value:
        return
    path.write_text(value + "\n")
