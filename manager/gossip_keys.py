"""The cluster's gossip encryption keys (swarmkit's keymanager, gossip subsystem only): made at init, rotated by the
leader every 12 h, three kept, handed to agents in the dispatcher session (manager/dispatcher.py; used by shoal/swarm)."""

from __future__ import annotations

import datetime
import os
from typing import Any

from proto import objects_pb2 as pb

SUBSYSTEM = "networking:gossip"
KEY_BYTES = 16  # AES-128-GCM, as swarmkit's keymanager
KEEP = 3
ROTATION_S = 12 * 3600.0  # swarmkit's DefaultKeyRotationInterval


def gossip_keys(cluster: pb.Cluster) -> list[pb.EncryptionKey]:
    """The gossip keys, oldest first."""
    return sorted((k for k in cluster.network_bootstrap_keys if k.subsystem == SUBSYSTEM), key=lambda k: k.lamport_time)


def add_key(cluster: pb.Cluster, now: datetime.datetime) -> None:
    """A new key with the next Lamport time; only the newest KEEP gossip keys stay (other subsystems untouched)."""
    cluster.encryption_key_lamport_clock += 1
    keys = gossip_keys(cluster)
    keys.append(pb.EncryptionKey(subsystem=SUBSYSTEM, key=os.urandom(KEY_BYTES),
                                 lamport_time=cluster.encryption_key_lamport_clock))
    keep = keys[-KEEP:]
    others = [k for k in cluster.network_bootstrap_keys if k.subsystem != SUBSYSTEM]
    del cluster.network_bootstrap_keys[:]
    cluster.network_bootstrap_keys.extend(others + keep)
    cluster.network_keys_rotated_at.FromDatetime(now)


def rotation_due(cluster: pb.Cluster, now: datetime.datetime, interval_s: float = ROTATION_S) -> bool:
    if not gossip_keys(cluster):
        return True  # a cluster made before gossip keys existed gets them from its leader
    last = cluster.network_keys_rotated_at.ToDatetime(tzinfo=datetime.timezone.utc)
    return (now - last).total_seconds() >= interval_s


def session_fields(cluster: pb.Cluster | None) -> dict[str, Any]:
    """network_keys, network_key_lamport and network_key_primary for a SessionMessage."""
    keys = gossip_keys(cluster) if cluster is not None else []
    if not keys:
        return {}
    return {"network_keys": [k.key for k in keys], "network_key_lamport": keys[-1].lamport_time,
            "network_key_primary": max(0, len(keys) - 2)}


async def rotate_if_due(raft: Any, cluster_id: str, now: datetime.datetime, interval_s: float = ROTATION_S) -> bool:
    """On the leader: add a key through the store when one is due (decided again inside the transaction)."""
    def tx(t: Any) -> bool:
        cur = t.get("cluster", cluster_id)
        if cur is None or not rotation_due(cur, now, interval_s):
            return False
        upd = pb.Cluster()
        upd.CopyFrom(cur)
        add_key(upd, now)
        t.update("cluster", upd)
        return True

    return bool(await raft.propose(tx))
