"""The null and host drivers: the predefined `none` and `host` networks, no kernel state.

Registered by agent.network.drivers.default_registry; asked by the controller and the sandbox.
"""
from __future__ import annotations

from agent.network.drivers.base import Driver


class NullDriver(Driver):
    """`none`: the container gets its own namespace with only loopback."""

    name = "null"
    singleton = True
    exclusive = True


class HostDriver(Driver):
    """`host`: the container uses the host's namespace; nothing to plumb."""

    name = "host"
    singleton = True
    exclusive = True
    shares_host_netns = True
