"""Fast paths of a container start (shoal/engine/engine.py's _start): the steps that need a thread only for
blocking work (user mounts to resolve in the image, host devices to walk, the init binary to find) run inline when
there is none, so a plain start (a swarm task's, say) pays no thread hop for them: each hop is two context switches
and GIL hand-offs, hundreds of ms on a loaded host. Neighbours: container_mounts.py, createopts.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.executor.spec import Mount, SpecExtras
from shoal.engine import container_mounts, createopts


async def mounts_at_start(volumes: Any, container: Any, image_rootfs: Path) -> list[Mount]:
    """container_mounts.at_start, in a thread only when the container has mounts."""
    if not container_mounts.points_of(container):
        return []
    return await asyncio.to_thread(container_mounts.at_start, volumes, container, image_rootfs)


async def spec_extras(options: createopts.RunOptions) -> tuple[SpecExtras, list[Mount]]:
    """createopts.spec_extras, in a thread only when it reads the host (--privileged, --device, --init)."""
    if options.privileged or options.devices or options.init:
        return await asyncio.to_thread(createopts.spec_extras, options)
    return createopts.spec_extras(options)
