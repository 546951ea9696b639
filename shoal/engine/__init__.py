"""The local engine: networks, containers and images of one node, behind the Docker API.

It composes agent.network (kernel networking), agent.executor (runc) and agent.images;
shoal.api turns its records into Docker JSON.
"""
