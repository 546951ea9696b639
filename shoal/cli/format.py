"""Pure helpers of the CLI: Docker-shaped tables, durations, sizes, ports, and flag parsing.

No I/O and no clock of their own (callers pass `now`); used by shoal.cli.* and tested by
tests/unit/test_cli_format.py.
"""
from __future__ import annotations

import json

from shoal.humanize import human_duration
TYPE_CHECKING = False  # not `from typing import ...`: typing costs ~3 ms of CLI start-up

if TYPE_CHECKING:  # runtime imports stay minimal: this module is on the CLI's fast path
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import datetime
    from typing import Any


class UsageError(ValueError):
    """Bad command-line input; the message names the bad value."""


# ---- tables ---------------------------------------------------------------------------
def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Lay out cells like Go's tabwriter as docker uses it (minwidth 10, padding 3).

    Every column but the last is padded to max(10, widest cell + 3); the last is not padded.
    """
    lines = [list(headers), *(list(row) for row in rows)]
    if not lines[0]:
        return ""
    widths = [max(10, max(len(line[i]) for line in lines) + 3) for i in range(len(headers) - 1)]
    out = []
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths)]
        out.append("".join(cells) + line[-1])
    return "\n".join(out) + "\n"


def to_json(value: Any) -> str:
    """JSON as `docker inspect` prints it: 4-space indent, non-ASCII kept."""
    return json.dumps(value, indent=4, ensure_ascii=False)


# ---- ids, names, text -----------------------------------------------------------------
def short_id(value: str) -> str:
    """12 characters of an id, without a `sha256:` prefix."""
    if value.startswith("sha256:"):
        value = value[len("sha256:"):]
    return value[:12]


def ellipsis(text: str, width: int) -> str:
    """Docker's formatter.Ellipsis: cut to `width` characters, the last being '…'."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return text[: width - 1] + "…"


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """Go's strconv.Quote for the characters a command line holds."""
    out = []
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def container_names(names: Sequence[str] | None, trunc: bool = True) -> str:
    """The NAMES column: names without '/', link names (a/b) only with --no-trunc."""
    shown: list[str] = []
    for name in names or []:
        bare = name[1:] if name.startswith("/") else name
        if trunc and "/" in bare:
            continue
        shown.append(bare)
        if trunc:
            break
    return ",".join(shown)


def split_repo_tag(reference: str) -> tuple[str, str]:
    """`localhost:5000/busybox:1.36` -> (`localhost:5000/busybox`, `1.36`); no tag -> `<none>`."""
    reference = reference.split("@", 1)[0]
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1:]
    return reference, "<none>"


# ---- time and size --------------------------------------------------------------------
def _scaled(size: float, base: float, units: Sequence[str]) -> tuple[float, str]:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return size, units[i]


def human_size(size: float) -> str:
    """go-units HumanSizeWithPrecision(size, 3) as `docker images` shows SIZE: 4.26MB."""
    value, unit = _scaled(float(size), 1000.0, ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"))
    return f"{value:.3g}{unit}"


def bytes_size(size: float) -> str:
    """go-units BytesSize (binary, 4 significant digits) as `docker info` shows memory."""
    value, unit = _scaled(float(size), 1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"))
    return f"{value:.4g}{unit}"


def parse_time(value: str) -> datetime | None:
    """RFC 3339 (with nanoseconds) to an aware datetime; the zero time and junk give None."""
    from datetime import datetime, timezone

    if not value or value.startswith("0001-01-01"):
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    main, sep, rest = text.partition(".")
    if sep:  # Python takes at most 6 fractional digits
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{main}.{(digits + '000000')[:6]}{rest[i:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def created_ago(created: float, now: float) -> str:
    """The CREATED column from a Unix timestamp: `2 minutes ago`."""
    return human_duration(max(0.0, now - created)) + " ago"


def container_status(state: Mapping[str, Any], now: float) -> str:
    """A container's STATUS text from its inspect `State`, worded like dockerd's."""
    status = str(state.get("Status", "")).lower()
    started = parse_time(str(state.get("StartedAt", "")))
    finished = parse_time(str(state.get("FinishedAt", "")))
    if status == "running" or state.get("Running"):
        up = human_duration(now - started.timestamp()) if started else "Less than a second"
        if state.get("Paused"):
            return f"Up {up} (Paused)"
        return f"Up {up}"
    if status == "restarting" or state.get("Restarting"):
        ago = f" {human_duration(now - finished.timestamp())} ago" if finished else ""
        return f"Restarting ({state.get('ExitCode', 0)}){ago}"
    if status == "removing":
        return "Removal In Progress"
    if status == "dead":
        return "Dead"
    if status == "created" or not finished:
        return "Created"
    return f"Exited ({state.get('ExitCode', 0)}) {human_duration(now - finished.timestamp())} ago"


# ---- ports ----------------------------------------------------------------------------
def _join_host_port(ip: str, port: str) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def format_ports(ports: Sequence[Mapping[str, Any]] | None) -> str:
    """The PORTS column of `docker ps` from the list API's Ports[].

    Published ports whose host and container numbers differ print one by one
    (`0.0.0.0:8080->80/tcp`); the others are grouped into consecutive ranges per IP and
    protocol (`80-81/tcp`, `0.0.0.0:80->80/tcp`); results are sorted like docker sorts them.
    """
    def key(p: Mapping[str, Any]) -> tuple[int, str, int, str]:
        return (int(p.get("PrivatePort") or 0), str(p.get("IP") or ""), int(p.get("PublicPort") or 0),
                str(p.get("Type") or "tcp"))

    groups: dict[str, list[int]] = {}  # key -> [first, last]; dicts keep creation order
    closed: list[str] = []
    singles: list[str] = []

    def form(group_key: str, first: int, last: int) -> str:
        ip, _, proto = group_key.rpartition("/")
        span = str(first) if first == last else f"{first}-{last}"
        if ip:
            span = f"{_join_host_port(ip, span)}->{span}"
        return f"{span}/{proto}"

    for port in sorted(ports or [], key=key):
        private, ip, public, proto = key(port)
        group_key = proto
        if ip:
            if public != private:
                singles.append(f"{_join_host_port(ip, str(public))}->{private}/{proto}")
                continue
            group_key = f"{ip}/{proto}"
        group = groups.get(group_key)
        if group is None:
            groups[group_key] = [private, private]
        elif private == group[1] + 1:
            group[1] = private
        else:
            closed.append(form(group_key, group[0], group[1]))
            groups[group_key] = [private, private]
    result = closed + [form(k, g[0], g[1]) for k, g in groups.items()] + singles
    return ", ".join(result)


def _port_range(text: str, what: str, spec: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    try:
        lo = int(first)
        hi = int(last) if sep else lo
    except ValueError:
        raise UsageError(f"invalid {what}: {text}") from None
    if not (0 < lo <= 65535 and 0 < hi <= 65535) or hi < lo:
        raise UsageError(f"invalid {what}: {text}")
    return lo, hi


def parse_publish(spec: str) -> list[tuple[str, str, str]]:
    """One -p value -> [(container_port/proto, host_ip, host_port)] (host_port "" = any).

    Forms: `80`, `8080:80`, `127.0.0.1:8080:80`, `127.0.0.1::80`, `[::1]:8080:80`, ranges
    `8000-8001:80-81`, with `/tcp|/udp|/sctp`.
    """
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise UsageError(f"invalid proto: {proto}")
    host_ip = ""
    if body.startswith("["):
        end = body.find("]:")
        if end < 0:
            raise UsageError(f"invalid port specification: {spec!r}")
        host_ip, body = body[1:end], body[end + 2:]
        parts = body.split(":")
        if len(parts) != 2:
            raise UsageError(f"invalid port specification: {spec!r}")
        host_port, container = parts
    else:
        parts = body.split(":")
        if len(parts) == 1:
            host_port, container = "", parts[0]
        elif len(parts) == 2:
            host_port, container = parts
        elif len(parts) == 3:
            host_ip, host_port, container = parts
        else:
            raise UsageError(f"invalid port specification: {spec!r}")
    if host_ip:
        import ipaddress

        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise UsageError(f"invalid IP address: {host_ip}") from None
    if not container:
        raise UsageError(f"no port specified: {spec}<empty>")
    c_lo, c_hi = _port_range(container, "containerPort", spec)
    if host_port:
        h_lo, h_hi = _port_range(host_port, "hostPort", spec)
        if c_lo != c_hi and h_hi - h_lo != c_hi - c_lo:
            raise UsageError(f"invalid ranges specified for container and host Ports: {container} and {host_port}")
    result = []
    for i, port in enumerate(range(c_lo, c_hi + 1)):
        if not host_port:
            hp = ""
        elif c_lo == c_hi:
            hp = host_port  # a host range for one container port means "any port in it"
        else:
            hp = str(h_lo + i)
        result.append((f"{port}/{proto}", host_ip, hp))
    return result


def parse_expose(spec: str) -> list[str]:
    """One --expose value (`80`, `80/udp`, `8000-8002`) -> ['80/tcp', ...]."""
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise UsageError(f"invalid proto: {proto}")
    lo, hi = _port_range(body, "range format for --expose", spec)
    return [f"{p}/{proto}" for p in range(lo, hi + 1)]


# ---- flags ----------------------------------------------------------------------------
def parse_kv(items: Iterable[str]) -> dict[str, str]:
    """`k=v` items (labels, options) -> dict; a bare `k` maps to ''."""
    result: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid key/value pair {item!r}: empty key")
        result[key] = value
    return result


def parse_filters(items: Iterable[str]) -> dict[str, dict[str, bool]]:
    """-f k=v items -> the `filters` query object the docker CLI sends: {"k": {"v": true}}."""
    result: dict[str, dict[str, bool]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise UsageError(f"bad format of filter (expected name=value): {item}")
        result.setdefault(key, {})[value.strip()] = True
    return result


def parse_env(items: Iterable[str], environ: Mapping[str, str]) -> list[str]:
    """-e items: `K=V` kept, bare `K` takes the caller's value and is dropped if unset."""
    result = []
    for item in items:
        if not item or item.startswith("="):
            raise UsageError(f"invalid environment variable: {item}")
        if "=" in item:
            result.append(item)
        elif item in environ:
            result.append(f"{item}={environ[item]}")
    return result


def build_ipam_config(subnets: Sequence[str], gateways: Sequence[str], ranges: Sequence[str]) -> list[dict[str, str]]:
    """--subnet/--gateway/--ip-range -> IPAM.Config, pairing each gateway/range with its subnet."""
    import ipaddress

    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise UsageError("every ip-range or gateway must have a corresponding subnet")
    configs: list[dict[str, str]] = [{"Subnet": s} for s in subnets]
    networks = []
    for subnet in subnets:
        try:
            networks.append(ipaddress.ip_network(subnet, strict=False))
        except ValueError:
            raise UsageError(f"invalid CIDR address: {subnet}") from None

    for value in ranges:
        try:
            rng = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise UsageError(f"invalid CIDR address: {value}") from None
        for config, net in zip(configs, networks):
            if rng.version == net.version and rng.network_address in net:
                if "IPRange" in config:
                    raise UsageError(f"cannot configure multiple ranges ({config['IPRange']}, {value}) on the same subnet ({config['Subnet']})")
                config["IPRange"] = value
                break
        else:
            raise UsageError(f"no matching subnet for range {value}")
    for value in gateways:
        try:
            gw = ipaddress.ip_address(value)
        except ValueError:
            raise UsageError(f"invalid gateway address: {value}") from None
        for config, net in zip(configs, networks):
            if gw.version == net.version and gw in net:
                if "Gateway" in config:
                    raise UsageError(f"cannot configure multiple gateways ({config['Gateway']}, {value}) for the same subnet ({config['Subnet']})")
                config["Gateway"] = value
                break
        else:
            raise UsageError(f"no matching subnet for gateway {value}")
    return configs


def host_name(host: str) -> str:
    """Lab host argument: `h2` or `2` -> `h2`."""
    text = host.strip()
    if text.isdigit():
        text = f"h{text}"
    if not (text.startswith("h") and text[1:].isdigit() and int(text[1:]) > 0):
        raise UsageError(f"invalid lab host {host!r}: expected hN (e.g. h1) or N")
    return f"h{int(text[1:])}"


# ---- rows -----------------------------------------------------------------------------
def network_rows(networks: Iterable[Mapping[str, Any]], trunc: bool = True) -> list[list[str]]:
    """NETWORK ID, NAME, DRIVER, SCOPE rows sorted by name, as `docker network ls`."""
    rows = []
    for net in sorted(networks, key=lambda n: str(n.get("Name", ""))):
        net_id = str(net.get("Id") or net.get("ID") or "")
        rows.append([short_id(net_id) if trunc else net_id, str(net.get("Name", "")),
                     str(net.get("Driver", "")), str(net.get("Scope", ""))])
    return rows


def container_rows(containers: Iterable[Mapping[str, Any]], now: float, trunc: bool = True) -> list[list[str]]:
    """CONTAINER ID, IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES rows as `docker ps`."""
    rows = []
    for c in containers:
        cid = str(c.get("Id", ""))
        image = str(c.get("Image", ""))
        if trunc and image.startswith("sha256:"):
            image = short_id(image)
        command = str(c.get("Command", ""))
        if trunc:
            command = ellipsis(command, 20)
        status = str(c.get("Status") or "") or str(c.get("State", "")).capitalize()
        rows.append([short_id(cid) if trunc else cid, image, go_quote(command),
                     created_ago(float(c.get("Created") or 0), now), status,
                     format_ports(c.get("Ports")), container_names(c.get("Names"), trunc)])
    return rows


def image_rows(images: Iterable[Mapping[str, Any]], now: float, trunc: bool = True) -> list[list[str]]:
    """REPOSITORY, TAG, IMAGE ID, CREATED, SIZE rows as `docker images` (one per tag)."""
    rows = []
    for img in images:
        image_id = str(img.get("Id", ""))
        shown_id = short_id(image_id) if trunc else image_id
        created = created_ago(float(img.get("Created") or 0), now)
        size = human_size(float(img.get("Size") or 0))
        tags = [t for t in (img.get("RepoTags") or []) if t != "<none>:<none>"]
        if not tags:
            digests = img.get("RepoDigests") or []
            repo = digests[0].split("@", 1)[0] if digests else "<none>"
            rows.append([repo, "<none>", shown_id, created, size])
        for tag in tags:
            repo, name = split_repo_tag(tag)
            rows.append([repo, name, shown_id, created, size])
    return rows


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def api_time(value: str, name: str, now: float | None = None) -> str:
    """--since/--until as the docker CLI sends them (seconds.nanoseconds): a Go duration
    ("42m", "1h30m": that long ago), RFC3339 / "2006-01-02[T15:04[:05]]" (UTC unless an offset),
    or a unix timestamp. ValueError naming the value otherwise."""
    import re
    import time as _time
    from datetime import datetime, timezone

    text = value.strip()
    if re.fullmatch(r"-?\d+(\.\d{1,9})?", text):
        return text
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if parts and "".join(n + u for n, u in parts) == text:
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
        moment = (_time.time() if now is None else now) - seconds
        return f"{moment:.9f}"
    iso = text.replace("Z", "+00:00")
    match = re.fullmatch(r"(.*?)(\.\d{1,9})?([+-]\d\d:\d\d)?", iso)
    base, frac, zone = match.group(1), match.group(2) or "", match.group(3) or "+00:00"  # type: ignore[union-attr]
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(base, fmt)
        except ValueError:
            continue
        stamp = int(datetime.fromisoformat(parsed.isoformat() + zone).timestamp())
        return f"{stamp}.{(frac[1:] + '000000000')[:9]}"
    raise ValueError(f'invalid value for "{name}": {value!r}: use a duration (42m), RFC3339 or a unix timestamp')


def natural_key(text: str) -> list[object]:
    """Natural order (the docker CLI's sortorder.NaturalLess): runs of digits compare as numbers. re.split with a
    group alternates text and digits from a text part, so the parts at one position are always of one type."""
    import re

    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]
