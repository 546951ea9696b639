"""Who is calling: the node certificate a gRPC peer showed (mTLS), checked against the cluster's store.
Used by every swarm service on the manager port (manager/ca/server.py, dispatcher.py, nodes*.py) and to guard Control."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from manager.ca.certs import MANAGER_OU, CertificateError, NodeIdentity, identity

UNAUTHORIZED_ROLE = "Permission denied: unauthorized peer role: rpc error: code = PermissionDenied desc = Permission denied: remote certificate not part of the allowed roles"


FORWARDED_FOR = "shoal-forwarded-for"  # metadata a manager adds when it forwards a caller's request to the leader


def forwarded_for(who: NodeIdentity) -> tuple[tuple[str, str], ...]:
    return ((FORWARDED_FOR, f"{who.node_id};{who.role_ou};{who.cluster_id}"),)


def effective_identity(direct: NodeIdentity | None, metadata: Any) -> NodeIdentity | None:
    """The caller a request acts for: the certificate's node, or, when that node is a manager forwarding to the
    leader (swarmkit's forwarded TLS info), the node it names. A worker's claim to forward is ignored, so a
    worker cannot pass for anyone else."""
    if direct is None or not direct.is_manager:
        return direct
    claim = next((v for k, v in (metadata or ()) if k == FORWARDED_FOR), None)
    if not isinstance(claim, str):
        return direct
    parts = claim.split(";")
    if len(parts) != 3 or not all(parts) or len(claim) > 256:
        return direct
    return dataclasses.replace(direct, node_id=parts[0], role_ou=parts[1], cluster_id=parts[2])


def caller_identity(ctx: grpc.aio.ServicerContext) -> NodeIdentity | None:
    return effective_identity(peer_identity(ctx), ctx.invocation_metadata())


def peer_identity(ctx: grpc.aio.ServicerContext) -> NodeIdentity | None:
    """The identity in the peer's verified client certificate; None when it showed none (bootstrap port)."""
    pems = ctx.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        return identity(pems[0])
    except CertificateError:
        return None


class Authorizer:
    """Checks a caller: its certificate names this cluster (O), a node the store still holds (a removed
    node's certificate is refused from then on) and, for manager-only services, OU=swarm-manager.

    The store asked is this manager's own, which on a follower may be a few entries behind the leader: a node
    it does not hold yet may have joined a moment ago (a manager that just joined does not hold itself until
    it has caught up). So "not a member" is only said after catch_up(), a linearizable read, has brought the
    store up to the leader's commit index; a member's calls, the common case, never wait for it."""

    def __init__(self, cluster_id: Callable[[], str], node_exists: Callable[[str], bool],
                 catch_up: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.cluster_id = cluster_id
        self.node_exists = node_exists
        self.catch_up = catch_up

    def why_refused(self, who: NodeIdentity | None, managers_only: bool) -> str | None:
        if who is None:
            return "Permission denied: no client certificate"
        cid = self.cluster_id()
        if cid and who.cluster_id != cid:
            return f"Permission denied: remote certificate not part of organization: {cid}"
        if not self.node_exists(who.node_id):
            return f"Permission denied: node {who.node_id} is not a member of this cluster (it was removed)"
        if managers_only and who.role_ou != MANAGER_OU:
            return UNAUTHORIZED_ROLE
        return None

    async def refusal(self, callers: list[tuple[NodeIdentity | None, bool]]) -> str | None:
        """The first refusal among (identity, managers_only) pairs, asked again after catch_up() when one of
        them names a node the local store does not hold (yet)."""
        why = self._first_refusal(callers)
        if why is None or self.catch_up is None:
            return why
        if all(who is None or self.node_exists(who.node_id) for who, _ in callers):
            return why  # refused for its organization or role: no store entry can change that
        if not await self.catch_up():
            return why
        return self._first_refusal(callers)

    def _first_refusal(self, callers: list[tuple[NodeIdentity | None, bool]]) -> str | None:
        for who, managers_only in callers:
            why = self.why_refused(who, managers_only)
            if why is not None:
                return why
        return None

    async def check(self, ctx: grpc.aio.ServicerContext, managers_only: bool) -> NodeIdentity:
        direct = peer_identity(ctx)
        who = effective_identity(direct, ctx.invocation_metadata())
        # the forwarding manager itself must be a member in good standing, then the node it acts for
        why = await self.refusal([(direct, False), (who, managers_only)])
        if why is not None:
            await ctx.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        assert who is not None
        return who


def guarded_handlers(register: Callable[[Any], None], check: Callable[[grpc.aio.ServicerContext], Awaitable[Any]]) -> list[grpc.GenericRpcHandler]:
    """The handlers a generated add_XServicer_to_server(servicer, server) registers, each method first
    awaiting check(ctx): guards a servicer we do not own (Control) without touching its code."""
    captured: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    class _Capture:
        def add_generic_rpc_handlers(self, _handlers: object) -> None:
            pass

        def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
            captured[service] = handlers

    register(_Capture())
    out = []
    for service, handlers in captured.items():
        wrapped = {name: _guard(h, check) for name, h in handlers.items()}
        out.append(grpc.method_handlers_generic_handler(service, wrapped))
    return out


def _guard(h: Any, check: Callable[[grpc.aio.ServicerContext], Awaitable[Any]]) -> Any:
    if h.unary_unary is not None:
        inner_uu = h.unary_unary

        async def uu(req: Any, ctx: grpc.aio.ServicerContext) -> Any:
            await check(ctx)
            return await inner_uu(req, ctx)

        return h._replace(unary_unary=uu)
    if h.unary_stream is not None:
        inner_us = h.unary_stream

        async def us(req: Any, ctx: grpc.aio.ServicerContext) -> Any:
            await check(ctx)
            async for item in inner_us(req, ctx):
                yield item

        return h._replace(unary_stream=us)
    if h.stream_unary is not None:
        inner_su = h.stream_unary

        async def su(reqs: Any, ctx: grpc.aio.ServicerContext) -> Any:
            await check(ctx)
            return await inner_su(reqs, ctx)

        return h._replace(stream_unary=su)
    inner_ss = h.stream_stream

    async def ss(reqs: Any, ctx: grpc.aio.ServicerContext) -> Any:
        await check(ctx)
        async for item in inner_ss(reqs, ctx):
            yield item

    return h._replace(stream_stream=ss)
