"""The local engine: the container lifecycle of one node, behind the Docker API.

It calls agent.network (networks and sandboxes), agent.executor (runc) and agent.images;
shoal.api turns its records into Docker JSON.
"""
