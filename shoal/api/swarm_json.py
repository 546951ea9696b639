"""Swarm objects (proto Node, Cluster) as Docker Engine API JSON and back (NodeSpec, the parts of a swarm Spec
shoal applies). The edge conversion for shoal/api/routes_swarm.py; nothing else speaks Docker JSON for swarm."""

from __future__ import annotations

import base64
from typing import Any

from common.errdefs import InvalidParameter
from proto import objects_pb2 as pb

ROLE = {pb.NodeSpec.WORKER: "worker", pb.NodeSpec.MANAGER: "manager"}
AVAILABILITY = {pb.NodeSpec.ACTIVE: "active", pb.NodeSpec.PAUSE: "pause", pb.NodeSpec.DRAIN: "drain"}
STATE = {pb.NodeStatus.UNKNOWN: "unknown", pb.NodeStatus.DOWN: "down", pb.NodeStatus.READY: "ready",
         pb.NodeStatus.DISCONNECTED: "disconnected"}
REACH = {pb.ManagerStatus.UNKNOWN: "unknown", pb.ManagerStatus.UNREACHABLE: "unreachable",
         pb.ManagerStatus.REACHABLE: "reachable"}
_ZERO_TIME = "0001-01-01T00:00:00Z"


def _ts(meta: pb.Meta, field: str) -> str:
    return getattr(meta, field).ToJsonString() if meta.HasField(field) else _ZERO_TIME


def tls_info(ca_pem: bytes) -> dict[str, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if not ca_pem:
        return {}
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"TrustRoot": ca_pem.decode(), "CertIssuerSubject": base64.b64encode(cert.subject.public_bytes()).decode(),
            "CertIssuerPublicKey": base64.b64encode(spki).decode()}


def node_json(n: pb.Node, ca_pem: bytes = b"") -> dict[str, Any]:
    d = n.description
    out: dict[str, Any] = {
        "ID": n.id,
        "Version": {"Index": n.meta.version.index},
        "CreatedAt": _ts(n.meta, "created_at"),
        "UpdatedAt": _ts(n.meta, "updated_at"),
        "Spec": {**({"Name": n.spec.annotations.name} if n.spec.annotations.name else {}),
                 "Labels": dict(n.spec.annotations.labels), "Role": ROLE.get(n.spec.desired_role, "worker"),
                 "Availability": AVAILABILITY.get(n.spec.availability, "active")},
        "Description": {
            "Hostname": d.hostname,
            "Platform": {"Architecture": d.platform.architecture, "OS": d.platform.os},
            "Resources": {"NanoCPUs": d.resources.nano_cpus, "MemoryBytes": d.resources.memory_bytes},
            "Engine": {"EngineVersion": d.engine_version, "Labels": dict(d.engine_labels) or None,
                       "Plugins": [{"Type": "Log", "Name": "json-file"}, {"Type": "Network", "Name": "bridge"},
                                   {"Type": "Network", "Name": "host"}, {"Type": "Network", "Name": "macvlan"},
                                   {"Type": "Network", "Name": "null"}, {"Type": "Network", "Name": "overlay"}]},
            "TLSInfo": tls_info(ca_pem),
        },
        "Status": {"State": STATE.get(n.status.state, "unknown"), **({"Message": n.status.message} if n.status.message else {}),
                   "Addr": n.status.addr},
    }
    if n.role == pb.NodeSpec.MANAGER and n.HasField("manager_status"):
        ms = n.manager_status
        out["ManagerStatus"] = {**({"Leader": True} if ms.leader else {}),
                                "Reachability": REACH.get(ms.reachability, "unknown"), "Addr": ms.addr}
    return out


def _ns(d: Any) -> int:
    return d.ToNanoseconds()


def cluster_spec_json(c: pb.Cluster) -> dict[str, Any]:
    s = c.spec
    return {
        "Name": s.annotations.name or "default",
        "Labels": dict(s.annotations.labels),
        "Orchestration": {"TaskHistoryRetentionLimit": s.orchestration.task_history_retention_limit},
        "Raft": {"SnapshotInterval": s.raft.snapshot_interval, "KeepOldSnapshots": s.raft.keep_old_snapshots,
                 "LogEntriesForSlowFollowers": s.raft.log_entries_for_slow_followers,
                 "ElectionTick": s.raft.election_tick, "HeartbeatTick": s.raft.heartbeat_tick},
        "Dispatcher": {"HeartbeatPeriod": _ns(s.dispatcher.heartbeat_period)},
        "CAConfig": {"NodeCertExpiry": _ns(s.ca_config.node_cert_expiry)},
        "TaskDefaults": {},
        "EncryptionConfig": {"AutoLockManagers": False},
    }


def cluster_info_json(c: pb.Cluster) -> dict[str, Any]:
    """The cluster as /info's Swarm.Cluster and the body of GET /swarm without the join tokens."""
    return {
        "ID": c.id,
        "Version": {"Index": c.meta.version.index},
        "CreatedAt": _ts(c.meta, "created_at"),
        "UpdatedAt": _ts(c.meta, "updated_at"),
        "Spec": cluster_spec_json(c),
        "TLSInfo": tls_info(c.root_ca.ca_cert),
        "RootRotationInProgress": False,
        "DefaultAddrPool": list(c.default_address_pool),
        "SubnetSize": c.subnet_size,
        "DataPathPort": c.vxlan_udp_port,
    }


def swarm_json(c: pb.Cluster) -> dict[str, Any]:
    return {**cluster_info_json(c), "JoinTokens": {"Worker": c.root_ca.join_tokens.worker,
                                                     "Manager": c.root_ca.join_tokens.manager}}


def _enum(value: Any, table: dict[int, str], what: str) -> int:
    for k, v in table.items():
        if v == value:
            return k
    raise InvalidParameter(f"invalid {what}: {value!r}")


def node_spec_from_json(body: Any, current: pb.NodeSpec) -> pb.NodeSpec:
    """docker node update's body (the full NodeSpec echoed back, changed)."""
    if not isinstance(body, dict):
        raise InvalidParameter("invalid JSON: node spec must be an object")
    spec = pb.NodeSpec()
    spec.CopyFrom(current)
    if "Name" in body:
        spec.annotations.name = str(body.get("Name") or "")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict):
        raise InvalidParameter("invalid JSON: Labels must be an object")
    spec.annotations.ClearField("labels")
    spec.annotations.labels.update({str(k): str(v) for k, v in labels.items()})
    if body.get("Role"):
        spec.desired_role = _enum(body["Role"], ROLE, "role")
    if body.get("Availability"):
        spec.availability = _enum(body["Availability"], AVAILABILITY, "availability")
    return spec


def cluster_spec_from_json(body: Any, current: pb.ClusterSpec) -> pb.ClusterSpec:
    """The parts of a swarm Spec shoal applies (dispatcher heartbeat, certificate expiry, labels, task history)."""
    if not isinstance(body, dict):
        raise InvalidParameter("invalid JSON: swarm spec must be an object")
    spec = pb.ClusterSpec()
    spec.CopyFrom(current)
    if isinstance(body.get("Labels"), dict):
        spec.annotations.ClearField("labels")
        spec.annotations.labels.update({str(k): str(v) for k, v in body["Labels"].items()})
    hb = (body.get("Dispatcher") or {}).get("HeartbeatPeriod")
    if hb:
        spec.dispatcher.heartbeat_period.FromNanoseconds(_positive(hb, "Dispatcher.HeartbeatPeriod"))
    exp = (body.get("CAConfig") or {}).get("NodeCertExpiry")
    if exp:
        check_cert_expiry(_positive(exp, "CAConfig.NodeCertExpiry") / 1e9)
        spec.ca_config.node_cert_expiry.FromNanoseconds(exp)
    thr = (body.get("Orchestration") or {}).get("TaskHistoryRetentionLimit")
    if thr is not None:
        spec.orchestration.task_history_retention_limit = int(thr)
    return spec


MIN_NODE_CERT_EXPIRY_S = 3600  # swarmkit's ca.MinNodeCertExpiration
CERT_EXPIRY_TOO_SHORT = "rpc error: code = InvalidArgument desc = minimum certificate expiry time is 1h0m0s"


def check_cert_expiry(seconds: float) -> None:
    """0 means the default (90 days); anything else must be at least an hour, as swarmkit's validateClusterSpec."""
    if 0 < seconds < MIN_NODE_CERT_EXPIRY_S:
        raise InvalidParameter(CERT_EXPIRY_TOO_SHORT)


def _positive(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise InvalidParameter(f"invalid {what}: {v!r}")
    return v
