"""Volumes and user mounts: parsing of -v/--mount/--tmpfs specs, the local volume driver, `docker cp` archives.
Used by shoal.engine (create/start/remove hooks) and shoal.api (volume and archive routes)."""
