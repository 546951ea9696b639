"""The one place tests find a `docker` client: $SHOAL_DOCKER_CLIENT, else `docker` on PATH, else the
private client scripts/docker-ref.sh unpacks ($SHOAL_DOCKER_REF, default /opt/shoal-docker-ref). Used by tests/lab."""
from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path


def docker_client(env: Mapping[str, str] = os.environ) -> str | None:
    """Path of a docker CLI to run, or None when this machine has none (install.sh provides one)."""
    explicit = env.get("SHOAL_DOCKER_CLIENT")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    on_path = shutil.which("docker", path=env.get("PATH", os.defpath))
    if on_path:
        return on_path
    private = Path(env.get("SHOAL_DOCKER_REF", "/opt/shoal-docker-ref")) / "bin" / "docker"
    return str(private) if os.access(private, os.X_OK) else None
