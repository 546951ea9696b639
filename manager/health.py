"""gRPC health checking (grpc.health.v1) and server reflection on the manager's gRPC server, so
grpcurl and load balancers can list and probe its services as they do any gRPC server.

Called by manager/node.py when it builds its server; serving() flips every service's health.
"""
from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class ManagerHealth:
    """The health servicer of one manager server and the services it answers for ("" = the server)."""

    def __init__(self, server: grpc.aio.Server, services: Sequence[str]) -> None:
        self.services = ["", *services]
        self.servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        reflection.enable_server_reflection([*services, HEALTH_SERVICE, reflection.SERVICE_NAME], server)

    async def serving(self, up: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self.services:
            await self.servicer.set(name, status)
