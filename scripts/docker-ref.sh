#!/usr/bin/env bash
# Docker's own binaries (Debian's docker.io, containerd, tini) unpacked into a private folder,
# never installed as a service: the reference dockerd for lab namespaces and benchmarks, and a
# `docker` client where none is on PATH. Idempotent. Prints the folder's bin directory.
set -euo pipefail
DEST=${SHOAL_DOCKER_REF:-/opt/shoal-docker-ref}
if [ ! -x "$DEST/usr/sbin/dockerd" ] || [ ! -x "$DEST/usr/bin/containerd" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  ( cd "$work" && chmod 777 . && apt-get download docker.io containerd tini >/dev/null 2>&1 ) || {
    apt-get update -qq
    ( cd "$work" && apt-get download docker.io containerd tini >/dev/null )
  }
  mkdir -p "$DEST"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$DEST"; done
fi
# dockerd looks for containerd, docker-proxy and docker-init on PATH: one folder holds them all.
mkdir -p "$DEST/bin"
for tool in "$DEST"/usr/bin/* "$DEST"/usr/sbin/*; do ln -sf "$tool" "$DEST/bin/$(basename "$tool")"; done
echo "$DEST/bin"
