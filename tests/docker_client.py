"""The one place tests find a `docker` client: $SHOAL_DOCKER_CLIENT, else `docker` on PATH, else the
private client scripts/docker-ref.sh unpacks (/opt/shoal-docker-ref/bin). Used by tests/lab."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

REF_DIR = Path(os.environ.get("SHOAL_DOCKER_REF", "/opt/shoal-docker-ref"))


def docker_client() -> str | None:
    """Path of a docker CLI to run, or None when this machine has none (install.sh provides one)."""
    explicit = os.environ.get("SHOAL_DOCKER_CLIENT")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    on_path = shutil.which("docker")
    if on_path:
        return on_path
    private = REF_DIR / "bin" / "docker"
    return str(private) if os.access(private, os.X_OK) else None
