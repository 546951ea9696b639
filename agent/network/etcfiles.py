"""The /etc/hosts, /etc/resolv.conf and /etc/hostname shoal writes for each container.

Pure text builders (Docker's layout); agent.network.sandbox writes them and the runtime bind-mounts them.
"""
from __future__ import annotations

import ipaddress
import locale
import os
from dataclasses import dataclass, field

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def hosts_file(own: list[tuple[str, list[str]]], extra: list[tuple[str, list[str]]] = ()) -> str:
    """own: (ip, [hostname, ...]) of the container itself; extra: links and --add-host lines."""
    lines = [HOSTS_HEADER]
    for ip, names in list(extra) + list(own):
        if ip and names:
            lines.append(f"{ip}\t{' '.join(names)}\n")
    return "".join(lines)


def parse_resolv_conf(text: str) -> tuple[list[str], list[str], list[str]]:
    """Returns (nameservers, search domains, options) of a resolv.conf text."""
    servers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        fields = line.split()
        if len(fields) < 2:
            continue
        if fields[0] == "nameserver":
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            search = fields[1:]
        elif fields[0] == "options":
            options.extend(fields[1:])
    return servers, search, options


def container_resolv_conf(host_text: str) -> str:
    """A default-bridge container's resolv.conf: the host's, without loopback resolvers
    (they would point into the container itself)."""
    servers, search, options = parse_resolv_conf(host_text)
    usable = [s for s in servers if not _is_loopback(s)]
    out = []
    if search:
        out.append("search " + " ".join(search))
    out.extend(f"nameserver {s}" for s in usable)
    if options:
        out.append("options " + " ".join(options))
    return "\n".join(out) + "\n"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def embedded_resolv_conf(host_text: str) -> str:
    """A user-defined-network container's resolv.conf: only the embedded resolver, plus the
    host's search domains and options (S11); ndots:0 as Docker writes it."""
    _, search, options = parse_resolv_conf(host_text)
    out = []
    if search:
        out.append("search " + " ".join(search))
    out.append("nameserver 127.0.0.11")
    kept = [o for o in options if not o.startswith("ndots:")]
    out.append("options " + " ".join(["ndots:0", *kept]))
    return "\n".join(out) + "\n"


def write_in_place(path, text: str, mode: int | None = None) -> None:
    """Rewrites a file keeping its inode: a running container sees a bind-mounted file's inode,
    so a rename would leave it reading the old content. mode: the file's permissions set after
    (whatever the umask made of a new file's). Plain descriptors, not a text file object: three
    files a start, and the buffered layers cost more than the writes."""
    data = text.encode(locale.getpreferredencoding(False))  # what open(path, "a+") would have encoded
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
    try:
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if mode is not None:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


@dataclass(slots=True)
class EtcCustom:
    """A container's --add-host lines and --dns/--dns-search/--dns-option."""

    hosts: list[tuple[str, list[str]]] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    @property
    def has_dns(self) -> bool:
        return bool(self.dns or self.search or self.options)


def custom_resolv_conf(host_text: str, embedded: bool, custom: EtcCustom) -> str:
    """resolv.conf with --dns/--dns-search/--dns-option as libnetwork writes it: each one given
    replaces the host's; "--dns-search ." means none. With the embedded resolver (user
    networks) the servers are its upstreams and the file names 127.0.0.11, ndots:0 added
    unless an ndots option was given."""
    servers, search, options = parse_resolv_conf(host_text)
    servers = list(custom.dns) or [s for s in servers if not _is_loopback(s)]
    if custom.search:
        search = [] if custom.search == ["."] else [s for s in custom.search if s != "."]
    if custom.options:
        options = list(custom.options)
    out = ["search " + " ".join(search)] if search else []  # dockerd 20.10's order: search first
    if embedded:
        out.append("nameserver 127.0.0.11")
        if not any(o.startswith("ndots:") for o in options):
            options = [*options, "ndots:0"]
    else:
        out.extend(f"nameserver {s}" for s in servers)
    if options:
        out.append("options " + " ".join(options))
    return "\n".join(out) + "\n"
