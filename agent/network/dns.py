"""Embedded DNS core (S11): the name table of user-defined networks and a pure query -> decision step
(dnspython). No sockets: agent.network.dnsserver feeds it wire queries through the hot path of
agent.network.dnsfast and carries out Reply/Forward; the engine fills the table."""
from __future__ import annotations

import functools
import ipaddress
import random
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

TTL = 600                  # libnetwork's respTTL
MAX_UPSTREAMS = 3          # libnetwork's maxExtDNS
LISTEN_ADDRESS = "127.0.0.11"
OUR_EDNS_PAYLOAD = 4096    # what we advertise when the client used EDNS
UDP_MIN_SIZE = 512         # a client without EDNS accepts no more than this over UDP
TCP_MAX_SIZE = 65535


@dataclass(slots=True)
class DnsRecord:
    """One name of one container on one network."""
    name: str
    network_id: str
    network_name: str
    container_id: str
    ipv4: str


@dataclass(slots=True)
class Reply:
    """Send these bytes back to the client."""
    wire: bytes


@dataclass(slots=True)
class Forward:
    """Ask the upstream resolvers; `query` is the client's parsed query (its id is the client's)."""
    query: dns.message.Message


@dataclass(slots=True)
class Drop:
    """Not a query we can answer at all (garbage, a response): say nothing."""
    reason: str


Decision = Reply | Forward | Drop


@dataclass(slots=True)
class _Endpoint:
    container_id: str
    network_id: str
    network_name: str
    ipv4: str
    names: list[str] = field(default_factory=list)  # normalised; names[0] is the PTR target


class NameTable:
    """Who answers to which name on which network. Changed synchronously by the engine, read per query.

    Lookups are scoped: an asker only sees containers on networks it is attached to itself.
    A name held by several containers on the shared networks returns all their addresses."""

    def __init__(self) -> None:
        # container id -> network id -> endpoint; insertion order is attachment order.
        self._endpoints: dict[str, dict[str, _Endpoint]] = {}
        # (network id, name) -> container ids holding that name there, in attachment order.
        self._names: dict[tuple[str, str], list[str]] = {}
        # (network id, ipv4) -> container ids with that address there (normally one).
        self._addresses: dict[tuple[str, str], list[str]] = {}
        # Bumped on every change, so caches of answers (FastAnswers) know when to drop theirs.
        self.version = 0
        # Names of services (agent.network.lbdns fills them from ServiceBindings): owner (a
        # service) -> network id -> (name -> addresses, address -> PTR name); the index
        # (network id, name) -> owners; (network id, task address) -> task name for PTR.
        self._service_names: dict[str, dict[str, tuple[dict[str, list[str]], dict[str, str]]]] = {}
        self._service_index: dict[tuple[str, str], list[str]] = {}
        self._service_ptr: dict[tuple[str, str], str] = {}

    def set_endpoint(self, container_id: str, network_id: str, network_name: str, ipv4: str,
                     names: list[str]) -> None:
        """Replace this container's entry on that network (names[0] should be the container name)."""
        if not container_id:
            raise ValueError(f"invalid container id {container_id!r}")
        if not network_id:
            raise ValueError(f"invalid network id {network_id!r}")
        if not network_name or "." in network_name.strip("."):
            # A dotted network name would make "name.network" ambiguous; Docker forbids it too.
            raise ValueError(f"invalid network name {network_name!r}")
        try:
            address = ipaddress.IPv4Address(ipv4)
        except ValueError:
            raise ValueError(f"invalid IPv4 address {ipv4!r} for container {container_id}") from None
        normalised: list[str] = []
        for name in names:
            key = normalise_name(name)
            if not key:
                raise ValueError(f"invalid DNS name {name!r} for container {container_id}")
            if key not in normalised:
                normalised.append(key)
        # Validation is done: only now change anything.
        self.remove_endpoint(container_id, network_id)
        self.version += 1
        self._endpoints.setdefault(container_id, {})[network_id] = _Endpoint(
            container_id, network_id, network_name.lower(), str(address), normalised)
        for key in normalised:
            self._names.setdefault((network_id, key), []).append(container_id)
        self._addresses.setdefault((network_id, str(address)), []).append(container_id)

    def remove_endpoint(self, container_id: str, network_id: str) -> None:
        """Forget this container on that network; no error if it was not there."""
        per_net = self._endpoints.get(container_id)
        if per_net is None or network_id not in per_net:
            return
        endpoint = per_net.pop(network_id)
        self.version += 1
        if not per_net:
            del self._endpoints[container_id]
        for key in endpoint.names:
            holders = self._names.get((network_id, key), [])
            if container_id in holders:
                holders.remove(container_id)
            if not holders:
                self._names.pop((network_id, key), None)
        holders = self._addresses.get((network_id, endpoint.ipv4), [])
        if container_id in holders:
            holders.remove(container_id)
        if not holders:
            self._addresses.pop((network_id, endpoint.ipv4), None)

    def remove_container(self, container_id: str) -> None:
        """Forget the container on every network."""
        for network_id in list(self._endpoints.get(container_id, {})):
            self.remove_endpoint(container_id, network_id)

    def set_service_names(self, owner: str, network_id: str, names: dict[str, list[str]],
                          ptr: dict[str, str] | None = None) -> None:
        """Replace what `owner` (a service) answers on that network: name -> IPv4 addresses (the
        VIP, or task addresses) and address -> name for PTR. Empty `names` and `ptr` remove it.
        Askers on the network see these names as they see containers' names."""
        normalised: dict[str, list[str]] = {}
        for name, addresses in names.items():
            key = normalise_name(name)
            if not key:
                raise ValueError(f"invalid DNS name {name!r} for service {owner}")
            for address in addresses:
                _check_ipv4(address, owner)
            if addresses:
                kept = normalised.setdefault(key, [])
                kept += [a for a in addresses if a not in kept]
        reverse = {}
        for address, name in (ptr or {}).items():
            _check_ipv4(address, owner)
            if normalise_name(name):
                reverse[address] = normalise_name(name)
        # Validation is done: only now change anything.
        self.remove_service_names(owner, network_id)
        if normalised or reverse:
            self._service_names.setdefault(owner, {})[network_id] = (normalised, reverse)
        for key in normalised:
            self._service_index.setdefault((network_id, key), []).append(owner)
        for address, name in reverse.items():
            self._service_ptr[(network_id, address)] = name

    def remove_service_names(self, owner: str, network_id: str) -> None:
        """Forget what `owner` answers on that network; no error if nothing."""
        self.version += 1
        per_net = self._service_names.get(owner)
        if per_net is None or network_id not in per_net:
            return
        names, reverse = per_net.pop(network_id)
        if not per_net:
            del self._service_names[owner]
        for key in names:
            owners = self._service_index.get((network_id, key), [])
            if owner in owners:
                owners.remove(owner)
            if not owners:
                self._service_index.pop((network_id, key), None)
        for address, name in reverse.items():
            if self._service_ptr.get((network_id, address)) == name:
                del self._service_ptr[(network_id, address)]

    def service_names(self, owner: str, network_id: str) -> dict[str, list[str]]:
        """What `owner` answers on that network (for inspection and tests)."""
        entry = self._service_names.get(owner, {}).get(network_id)
        return {k: list(v) for k, v in entry[0].items()} if entry else {}

    def records(self) -> list[DnsRecord]:
        """Every (name, endpoint) pair, for inspection and tests."""
        return [DnsRecord(name, ep.network_id, ep.network_name, ep.container_id, ep.ipv4)
                for per_net in self._endpoints.values() for ep in per_net.values() for name in ep.names]

    def knows(self, asker_container_id: str, name: str) -> bool:
        """True when `name` is one of ours for this asker (whatever the record type asked)."""
        return bool(self.lookup_a(asker_container_id, name))

    def lookup_a(self, asker_container_id: str, name: str) -> list[str]:
        """IPv4 addresses of `name` or `name.network` on the networks the asker shares; [] if none.

        Ordered by the asker's network attachment order, then by the targets' attachment order;
        an address appears once."""
        key = normalise_name(name)
        found: list[str] = []
        for endpoint in self._endpoints.get(asker_container_id, {}).values():
            for candidate in _candidates(key, endpoint.network_name):
                for holder in self._names.get((endpoint.network_id, candidate), []):
                    ipv4 = self._endpoints[holder][endpoint.network_id].ipv4
                    if ipv4 not in found:
                        found.append(ipv4)
                for owner in self._service_index.get((endpoint.network_id, candidate), ()):
                    for ipv4 in self._service_names[owner][endpoint.network_id][0][candidate]:
                        if ipv4 not in found:
                            found.append(ipv4)
        return found

    def lookup_ptr(self, asker_container_id: str, ipv4: str) -> str | None:
        """`name.network` of the container holding `ipv4` on a network the asker shares, else None."""
        for endpoint in self._endpoints.get(asker_container_id, {}).values():
            for holder in self._addresses.get((endpoint.network_id, ipv4), []):
                target = self._endpoints[holder][endpoint.network_id]
                if target.names:
                    return f"{target.names[0]}.{target.network_name}"
            task = self._service_ptr.get((endpoint.network_id, ipv4))
            if task:
                return f"{task}.{endpoint.network_name}"
        return None


@functools.lru_cache(maxsize=8192)
def normalise_name(name: str) -> str:
    """DNS names compare case-insensitively; a trailing dot and a leading '/' (Docker's
    container-name form) do not matter."""
    return name.strip().lstrip("/").rstrip(".").lower()


def _check_ipv4(address: str, owner: str) -> None:
    if not _is_ipv4(address):
        raise ValueError(f"invalid IPv4 address {address!r} for service {owner}")


@functools.lru_cache(maxsize=4096)
def _is_ipv4(address: str) -> bool:
    # Remembered: a service's names are set again with the same task addresses whenever one of its
    # tasks comes or goes, and parsing each address each time was most of that cost.
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return True


def _candidates(key: str, network_name: str) -> list[str]:
    # "web" matches itself; "web.mynet" matches "web" on mynet (and also an alias spelled "web.mynet").
    suffix = "." + network_name
    if key.endswith(suffix) and len(key) > len(suffix):
        return [key, key[: -len(suffix)]]
    return [key]


def answer(query_wire: bytes, asker_container_id: str, table: NameTable, *, tcp: bool = False,
           rng: random.Random | None = None) -> Decision:
    """Decide what to do with one query from one container.

    Names we own are answered here (TTL 600, RA set, AA not set, like Docker); anything else is
    forwarded, never NXDOMAIN'd. `rng` shuffles several addresses like Docker does; without it the
    order is lookup_a's. `tcp` lifts the 512-byte/EDNS size limit of UDP answers."""
    try:
        query = dns.message.from_wire(query_wire)
    except dns.exception.DNSException as exc:
        return Drop(f"unparseable query: {exc.__class__.__name__}")
    except Exception as exc:  # dnspython raises plain ValueError/IndexError on some garbage
        return Drop(f"unparseable query: {exc.__class__.__name__}")
    if query.flags & dns.flags.QR:
        return Drop("a response, not a query")
    if query.opcode() != dns.opcode.QUERY:
        return Reply(_error(query, dns.rcode.NOTIMP))
    if len(query.question) != 1:
        return Reply(_error(query, dns.rcode.FORMERR))
    question = query.question[0]
    if question.rdclass != dns.rdataclass.IN:
        return Forward(query)
    qname: dns.name.Name = question.name
    rdtype = question.rdtype
    text = qname.to_text(omit_final_dot=True)

    if rdtype == dns.rdatatype.PTR:
        target = _ptr_target(qname, asker_container_id, table)
        if target is None:
            return Forward(query)
        response = _response(query)
        response.answer.append(dns.rrset.from_text(qname, TTL, dns.rdataclass.IN, dns.rdatatype.PTR,
                                                   target + "."))
        return Reply(_wire(response, query, tcp))

    addresses = table.lookup_a(asker_container_id, text)
    if not addresses:
        return Forward(query)
    response = _response(query)
    if rdtype == dns.rdatatype.A:
        if rng is not None and len(addresses) > 1:
            rng.shuffle(addresses)
        response.answer.append(dns.rrset.from_text_list(qname, TTL, dns.rdataclass.IN, dns.rdatatype.A,
                                                        addresses))
    # AAAA (we have IPv4 only), MX, TXT, ... of a name we own: NOERROR with no data, so the
    # client does not go on to ask the world about a container's name.
    return Reply(_wire(response, query, tcp))


def upstream_reply(query: dns.message.Message, upstream: dns.message.Message | None, *,
                   tcp: bool = False) -> bytes:
    """The bytes to send the client for an upstream's answer (None: no usable answer -> SERVFAIL).

    The client's id is put back, and the answer is cut to the client's UDP size with TC set."""
    if upstream is None:
        return _error(query, dns.rcode.SERVFAIL)
    upstream.id = query.id
    # want_shuffle=False: the upstream's order is the upstream's business, not dnspython's.
    return upstream.to_wire(max_size=_client_limit(query, tcp), prefer_truncation=True, want_shuffle=False)


def refused(query: dns.message.Message) -> bytes:
    """REFUSED for a query we will not forward (too many in flight)."""
    return _error(query, dns.rcode.REFUSED)


def usable_upstream(message: dns.message.Message) -> bool:
    """SERVFAIL and REFUSED make us try the next upstream, as libnetwork does."""
    return message.rcode() not in (dns.rcode.SERVFAIL, dns.rcode.REFUSED)


def upstreams_from_resolv_conf(text: str) -> list[str]:
    """The host's first three usable nameservers, in order.

    Loopback ones are kept: the forwarder sends from the daemon's namespace, where the host's
    127.0.0.53 (systemd-resolved, dnsmasq) is reachable. 127.0.0.11 itself is dropped (that
    would be ourselves if the daemon ever ran inside a container). Zone-scoped IPv6 (fe80::1%eth0)
    and unparseable entries are skipped."""
    servers: list[str] = []
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(fields[1])
        except ValueError:
            continue
        if str(address) == LISTEN_ADDRESS or str(address) in servers:
            continue
        servers.append(str(address))
        if len(servers) == MAX_UPSTREAMS:
            break
    return servers


def _ptr_target(qname: dns.name.Name, asker: str, table: NameTable) -> str | None:
    try:
        address = dns.reversename.to_address(qname)
    except (dns.exception.SyntaxError, ValueError):
        return None  # not a full in-addr.arpa/ip6.arpa name: maybe upstream knows it
    if ":" in address:
        return None  # containers have IPv4 only here
    return table.lookup_ptr(asker, address)


def _response(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query, recursion_available=True, our_payload=OUR_EDNS_PAYLOAD)
    response.flags |= query.flags & dns.flags.CD
    return response


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
    response = _response(query)
    response.set_rcode(rcode)
    return response.to_wire()


def _client_limit(query: dns.message.Message, tcp: bool) -> int:
    if tcp:
        return TCP_MAX_SIZE
    if query.edns >= 0:
        return max(UDP_MIN_SIZE, min(query.payload, TCP_MAX_SIZE))
    return UDP_MIN_SIZE


def _wire(response: dns.message.Message, query: dns.message.Message, tcp: bool) -> bytes:
    # dnspython shuffles rdatasets while rendering unless told not to; the order is ours to choose.
    return response.to_wire(max_size=_client_limit(query, tcp), prefer_truncation=True, want_shuffle=False)
