"""The overlay's kernel objects over netlink: a network's namespace with its bridge and VXLAN device,
endpoint veths on that bridge, and remote peers as neighbour + FDB entries on the VXLAN device.

Driven by vxlan/dataplane.py with names and diffs from vxlan/plan.py and vxlan/peers.py. `host` is
the namespace whose UDP socket carries the VXLAN traffic (None: the calling thread's own).
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from common import rtnl
from common.rtnl import Rtnl
from vxlan import ns
from vxlan.peers import Changes
from vxlan.plan import BRIDGE, NetworkNames
from vxlan.types import OverlaySpec

NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02


class OverlaySetupError(Exception):
    """A kernel step of the overlay failed; the message names the object."""


def _delete_link(ipr: IPRoute, name: str) -> bool:
    for index in ipr.link_lookup(ifname=name):
        try:
            ipr.link("del", index=index)
            return True
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
    return False


def _kind(link) -> str:
    info = link.get("IFLA_LINKINFO")
    return (info.get("IFLA_INFO_KIND") if info is not None else None) or ""


def underlay_mtu(host: Path | None, data_addr: IPv4Address) -> int:
    """The MTU of the host device carrying the data path address (two plain requests: every node's first task on
    a network asks it)."""
    with Rtnl(host) as hr:
        for index, address, _prefixlen in hr.addresses_v4():
            if address == data_addr:
                mtu = hr.link_mtu(index)
                if mtu is not None:
                    return mtu
    raise OverlaySetupError(f"no interface of this host has the data path address {data_addr}")


def ensure_network(host: Path | None, names: NetworkNames, spec: OverlaySpec, mtu: int) -> bool:
    """The network's namespace, bridge (gateway address, mtu, up) and VXLAN device on it. The device
    is made in the host namespace and moved (its UDP socket stays in the host's, as in libnetwork).
    Idempotent; returns True when the namespace was made now. Undoes a namespace it made on failure."""
    made = not ns.is_mounted(ns.path_of(names.netns))
    path = ns.create(names.netns, ipv6=False)  # as Docker's overlay namespaces
    try:
        if made and _make_fresh(host, path, names, spec, mtu):
            return True
        with ns.iproute(path) as nsr:
            bridge = _ensure_bridge(nsr, spec.gateway, mtu)
            present = nsr.link_lookup(ifname=names.vxlan)
        if not present:
            _make_vxlan(host, path, names, spec, mtu)
        with ns.iproute(path) as nsr:
            index = nsr.link_lookup(ifname=names.vxlan)[0]
            nsr.link("set", index=index, master=bridge, mtu=mtu, state="up")
    except Exception:
        if made:
            remove_network(names)
        raise
    return made


def _make_fresh(host: Path | None, path: Path, names: NetworkNames, spec: OverlaySpec, mtu: int) -> bool:
    """ensure_network's usual case, a namespace made just now, in plain rtnetlink requests (common/rtnl.py; the
    first task of a network on a node pays them): the bridge (up) and its address, then the VXLAN device made
    straight in the namespace on the bridge and up (its UDP socket stays in the host's: the kernel opens it in the
    requester's namespace), marked. False when a device of the VXLAN's name sits in the host namespace (a crash's
    leftover): the step-by-step path sorts that out."""
    with Rtnl(path) as nsr:
        nsr.link_add(BRIDGE, "bridge", mtu=mtu, up=True)
        bridge = nsr.link_index(BRIDGE)
        if bridge is None:
            raise OverlaySetupError(f"bridge {BRIDGE} did not appear in {names.netns}")
        nsr.addr_add(bridge, str(spec.gateway.ip), spec.gateway.network.prefixlen)
    with Rtnl(host) as hr:
        if hr.link_index(names.vxlan) is not None:
            return False
        try:
            hr.link_add(names.vxlan, "vxlan", info_data=rtnl.vxlan_info(spec.vni, str(spec.data_addr), spec.port),
                        netns=path, master=bridge, mtu=mtu, up=True)
        except rtnl.NetlinkError as exc:
            if exc.errno == errno.EEXIST:
                raise OverlaySetupError(
                    f"cannot create VXLAN device {names.vxlan} (VNI {spec.vni}, port {spec.port}): another "
                    f"device of this host uses that VNI on that port") from exc
            raise OverlaySetupError(f"cannot create VXLAN device {names.vxlan} (VNI {spec.vni}): {exc}") from exc
    with Rtnl(path) as nsr:
        vx = nsr.link_index(names.vxlan)
        if vx is None:
            raise OverlaySetupError(f"VXLAN device {names.vxlan} did not appear in {names.netns}")
        nsr.link_set(vx, alias=names.mark)
    return True


def _ensure_bridge(nsr: IPRoute, gateway: IPv4Interface, mtu: int) -> int:
    if not nsr.link_lookup(ifname=BRIDGE):
        nsr.link("add", ifname=BRIDGE, kind="bridge")
    index = nsr.link_lookup(ifname=BRIDGE)[0]
    have = {(a.get("address"), a["prefixlen"]) for a in nsr.get_addr(family=socket.AF_INET, index=index)}
    if (str(gateway.ip), gateway.network.prefixlen) not in have:
        nsr.addr("add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
    nsr.link("set", index=index, mtu=mtu, state="up")
    return index


def _make_vxlan(host: Path | None, path: Path, names: NetworkNames, spec: OverlaySpec, mtu: int) -> None:
    with ns.iproute(host) as ipr:
        for index in ipr.link_lookup(ifname=names.vxlan):
            link = ipr.get_links(index)[0]
            alias = link.get_attr("IFLA_IFALIAS") or ""
            # A leftover of a crash between create and move: ours when marked, or unmarked (the
            # crash came before the mark) and a VXLAN device of this very name.
            if _kind(link) == "vxlan" and alias in (names.mark, ""):
                _delete_link(ipr, names.vxlan)
            else:
                raise OverlaySetupError(f"interface {names.vxlan} exists in the host namespace and is not ours")
        try:
            ipr.link("add", ifname=names.vxlan, kind="vxlan", vxlan_id=spec.vni, vxlan_local=str(spec.data_addr),
                     vxlan_port=spec.port, vxlan_learning=0, vxlan_proxy=1, vxlan_l2miss=0, vxlan_l3miss=0,
                     mtu=mtu)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                raise OverlaySetupError(
                    f"cannot create VXLAN device {names.vxlan} (VNI {spec.vni}, port {spec.port}): another "
                    f"device of this host uses that VNI on that port") from exc
            raise OverlaySetupError(f"cannot create VXLAN device {names.vxlan} (VNI {spec.vni}): {exc}") from exc
        try:
            index = ipr.link_lookup(ifname=names.vxlan)[0]
            ipr.link("set", index=index, ifalias=names.mark)  # the kernel ignores IFLA_IFALIAS on create
            ipr.link("set", index=index, net_ns_fd=str(path))
        except Exception:
            _delete_link(ipr, names.vxlan)
            raise


def remove_network(names: NetworkNames) -> None:
    """Deletes the VXLAN device (so its VNI is free on the UDP socket at once, not when the kernel
    gets round to destroying the namespace), the bridge, then the namespace. No error when gone."""
    path = ns.path_of(names.netns)
    if ns.is_mounted(path):
        with ns.iproute(path) as nsr:
            links = nsr.get_links()
            # VXLAN devices first (found by kind: a stale namespace's name is not known), then veths.
            for wanted in ("vxlan", "veth", "bridge"):
                for link in links:
                    if _kind(link) == wanted:
                        _delete_link(nsr, link.get_attr("IFLA_IFNAME"))
    ns.delete(names.netns)


def vxlan_links(host: Path | None) -> dict[str, str]:
    """VXLAN devices of the host namespace with their ifalias."""
    with ns.iproute(host) as ipr:
        return {link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_IFALIAS") or ""
                for link in ipr.get_links() if _kind(link) == "vxlan"}


def delete_host_link(host: Path | None, name: str) -> None:
    with ns.iproute(host) as ipr:
        _delete_link(ipr, name)


# ---- endpoints ------------------------------------------------------------------------
def attach(names: NetworkNames, host_ifname: str, sandbox: Path, ifname: str, address: IPv4Interface, mac: str,
           mtu: int) -> None:
    """A veth from the network's bridge into the sandbox (`ifname` there, with address and MAC).
    Idempotent for the same endpoint; removed again when a step fails on first creation.

    The usual case, a new endpoint, takes four plain rtnetlink requests (common/rtnl.py: a start pays each of them
    on its node's kernel work): the pair made on the bridge and up, then the sandbox end's index, address, up. A
    name already taken (a restart plumbing again) goes the step-by-step way that checks what is there."""
    path = ns.path_of(names.netns)
    with Rtnl(path) as nl:
        bridge = nl.link_index(BRIDGE)
        if bridge is None:
            raise OverlaySetupError(f"the bridge {BRIDGE} of namespace {names.netns} is missing")
        try:
            nl.veth_add(host_ifname, ifname, sandbox, master=bridge, mtu=mtu, up=True, peer_mac=mac)
        except rtnl.NetlinkError as exc:
            if exc.errno != errno.EEXIST:
                raise OverlaySetupError(f"cannot create veth {host_ifname}/{ifname} into {sandbox}: {exc}") from exc
            _attach_existing(names, host_ifname, sandbox, ifname, address, mac, mtu)
            return
    try:
        with Rtnl(sandbox) as snr:
            inside = snr.link_index(ifname)
            if inside is None:
                raise OverlaySetupError(f"veth {ifname} did not appear in {sandbox}")
            snr.addr_add(inside, str(address.ip), address.network.prefixlen)
            snr.link_set(inside, up=True)
    except Exception:
        with ns.iproute(path) as nsr:
            _delete_link(nsr, host_ifname)
        raise


def _attach_existing(names: NetworkNames, host_ifname: str, sandbox: Path, ifname: str, address: IPv4Interface,
                     mac: str, mtu: int) -> None:
    path = ns.path_of(names.netns)
    peer = {"ifname": ifname, "net_ns_fd": str(sandbox), "address": mac, "mtu": mtu}
    with ns.iproute(path) as nsr:
        bridge = nsr.link_lookup(ifname=BRIDGE)[0]
        fresh = False  # attach made a new pair in one request; here the name was taken when it tried
        created = fresh
        if not fresh and not nsr.link_lookup(ifname=host_ifname):
            try:
                nsr.link("add", ifname=host_ifname, kind="veth", mtu=mtu, peer=peer)
            except NetlinkError as exc:
                raise OverlaySetupError(f"cannot create veth {host_ifname}/{ifname} into {sandbox}: {exc}") from exc
            created = True
        try:
            if not fresh:
                index = nsr.link_lookup(ifname=host_ifname)[0]
                nsr.link("set", index=index, master=bridge, mtu=mtu, state="up")
            with ns.iproute(sandbox) as snr:
                inside = snr.link_lookup(ifname=ifname)[0]
                have: set[tuple[str, int]] = set()
                if not created:  # a new peer has no address yet: no need to list them
                    have = {(a.get("address"), a["prefixlen"]) for a in snr.get_addr(family=socket.AF_INET, index=inside)}
                if (str(address.ip), address.network.prefixlen) not in have:
                    snr.addr("add", index=inside, address=str(address.ip), prefixlen=address.network.prefixlen)
                snr.link("set", index=inside, state="up")
        except Exception:
            if created:
                _delete_link(nsr, host_ifname)
            raise


def detach(names: NetworkNames, host_ifname: str) -> None:
    """Deletes the endpoint's veth (its sandbox end goes with it); no error when it is gone."""
    path = ns.path_of(names.netns)
    if not ns.is_mounted(path):
        return
    with ns.iproute(path) as nsr:
        _delete_link(nsr, host_ifname)


# ---- peers ----------------------------------------------------------------------------
def vxlan_index(names: NetworkNames) -> int:
    """The VXLAN device's index inside the network's namespace (kept by the data plane, so a peer
    change costs no lookup)."""
    found = None
    if names.vxlan:
        with Rtnl(ns.path_of(names.netns)) as nsr:
            found = nsr.link_index(names.vxlan)
    if found is None:
        raise OverlaySetupError(f"VXLAN device {names.vxlan} is missing in namespace {names.netns}")
    return found


def apply_peers(names: NetworkNames, changes: Changes, vx: int | None = None) -> int:
    """Writes one batch of neighbour and FDB changes into the network's namespace: the requests are
    encoded here (a neighbour message is 12 bytes and two attributes; pyroute2's encoder costs
    milliseconds per message) and sent a few hundred per sendmsg on one netlink socket, acks read
    after each chunk (no fork, no socket or round trip per entry). Writes are `replace` and deletes of
    missing entries are not errors, so applying a batch twice changes nothing. Returns the number of
    requests; raises OverlaySetupError naming the first entry the kernel refused."""
    if not changes:
        return 0
    path = ns.path_of(names.netns)
    if vx is None:
        vx = vxlan_index(names)
    requests: list[tuple[str, bool, bytes]] = []  # (what, is a delete, message without its header)
    for ip, mac in changes.neigh.items():
        if mac is None:
            requests.append((f"neighbour {ip}", True, _ndmsg(socket.AF_INET, vx, NUD_PERMANENT, 0, ip.packed, None)))
        else:
            requests.append((f"neighbour {ip} -> {mac}", False,
                             _ndmsg(socket.AF_INET, vx, NUD_PERMANENT, 0, ip.packed, _mac_bytes(mac))))
    for mac, vtep in changes.fdb.items():
        state = NUD_PERMANENT | NUD_NOARP
        if vtep is None:
            requests.append((f"fdb {mac}", True, _ndmsg(socket.AF_BRIDGE, vx, state, NTF_SELF, None, _mac_bytes(mac))))
        else:
            requests.append((f"fdb {mac} -> {vtep}", False,
                             _ndmsg(socket.AF_BRIDGE, vx, state, NTF_SELF, vtep.packed, _mac_bytes(mac))))
    with ns.entered(path):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        sock.settimeout(ACK_TIMEOUT_S)  # the kernel acks at once; never hang the kernel thread on it
        for start in range(0, len(requests), CHUNK):
            _send_chunk(sock, requests[start:start + CHUNK])
    except TimeoutError:
        raise OverlaySetupError(f"no netlink ack within {ACK_TIMEOUT_S} s programming peers in {names.netns}") from None
    finally:
        sock.close()
    return len(requests)


NETLINK_ROUTE = 0
NLMSG_ERROR = 2
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
NDA_DST = 1
NDA_LLADDR = 2
ACK_TIMEOUT_S = 10
CHUNK = 256  # requests per sendmsg: their acks fit the socket's receive buffer with room to spare


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _nla(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("HH", length, kind) + data + b"\0" * (-length % 4)


def _ndmsg(family: int, ifindex: int, state: int, flags: int, dst: bytes | None, lladdr: bytes | None) -> bytes:
    body = struct.pack("BxxxiHBB", family, ifindex, state, flags, 0)
    if dst is not None:
        body += _nla(NDA_DST, dst)
    if lladdr is not None:
        body += _nla(NDA_LLADDR, lladdr)
    return body


def _send_chunk(sock: socket.socket, chunk: list[tuple[str, bool, bytes]]) -> None:
    data = bytearray()
    for seq, (_what, delete, body) in enumerate(chunk, start=1):
        kind, flags = (RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK) if delete else \
            (RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE)
        data += struct.pack("IHHII", 16 + len(body), kind, flags, seq, 0) + body
    sock.sendall(data)
    pending = len(chunk)
    failure: tuple[str, int] | None = None
    while pending:
        reply = sock.recv(1 << 16)
        offset = 0
        while offset + 16 <= len(reply):
            length, kind, _flags, seq, _pid = struct.unpack_from("IHHII", reply, offset)
            if kind == NLMSG_ERROR and 1 <= seq <= len(chunk):
                pending -= 1
                code = -struct.unpack_from("i", reply, offset + 16)[0]
                what, delete, _ = chunk[seq - 1]
                missing = delete and code in (errno.ENOENT, errno.ESRCH)
                if code and not missing and failure is None:
                    failure = (what, code)
            offset += max(length, 16)
    if failure is not None:
        what, code = failure
        raise OverlaySetupError(f"cannot program {what}: {os.strerror(code)}")


def kernel_peers(names: NetworkNames) -> tuple[dict[str, str], dict[str, str]]:
    """What the VXLAN device holds: permanent neighbours {ip: mac} and FDB entries with a
    destination {mac: vtep}. For tests and diagnostics."""
    path = ns.path_of(names.netns)
    with ns.iproute(path) as nsr:
        vx = nsr.link_lookup(ifname=names.vxlan)[0]
        neigh = {n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR")
                 for n in nsr.get_neighbours(family=socket.AF_INET, ifindex=vx) if n["state"] & NUD_PERMANENT}
        fdb = {}
        for entry in nsr.fdb("dump", ifindex=vx):
            if entry["ifindex"] == vx and entry.get_attr("NDA_DST"):
                fdb[entry.get_attr("NDA_LLADDR")] = entry.get_attr("NDA_DST")
    return neigh, fdb
