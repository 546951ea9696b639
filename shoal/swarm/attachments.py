"""A node's calls to the managers' ResourceAllocator (manager/controlapi_networks.py): an address on an attachable
overlay for a container run outside any service (`run --network OVERLAY`), and its release when the container goes.
For the node's network driver (agent side); plain async functions over the node's TLS files and manager addresses."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from common.errdefs import ShoalError, Unavailable
from manager.nodes_service import error_from_rpc, open_secure
from manager.transport import TLSFiles
from proto import control_pb2, control_pb2_grpc
from proto import objects_pb2 as pb

TIMEOUT_S = 20.0  # the manager waits up to 10 s for the allocator


async def _call(managers: Sequence[str], tls: TLSFiles, method: str, request: object) -> object:
    """method on the first manager that answers; a refusal (not an outage) is final."""
    last: ShoalError = Unavailable("no manager address known")
    for addr in managers:
        async with open_secure(addr, tls) as ch:
            try:
                return await getattr(control_pb2_grpc.ResourceAllocatorStub(ch), method)(request, timeout=TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                last = error_from_rpc(e)
                # a manager that just joined may not have applied this node's own record yet: its "not a member"
                # is its lagging store speaking, so ask the next manager before taking it as final
                lagging = e.code() == grpc.StatusCode.PERMISSION_DENIED and "is not a member of this cluster" in (e.details() or "")
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not lagging:
                    raise last from None
    raise last


async def attach_network(managers: Sequence[str], tls: TLSFiles, network: str, container_id: str,
                         address: str = "", aliases: Sequence[str] = ()) -> tuple[str, pb.NetworkAttachment]:
    """(attachment id, attachment with the allocated address) for container_id on network (name or id)."""
    cfg = pb.NetworkAttachmentConfig(target=network, aliases=list(aliases), addresses=[address] if address else [])
    resp = await _call(managers, tls, "AttachNetwork",
                       control_pb2.AttachNetworkRequest(config=cfg, container_id=container_id))
    assert isinstance(resp, control_pb2.AttachNetworkResponse)
    return resp.attachment_id, resp.attachment


async def detach_network(managers: Sequence[str], tls: TLSFiles, attachment_id: str) -> None:
    await _call(managers, tls, "DetachNetwork", control_pb2.DetachNetworkRequest(attachment_id=attachment_id))
