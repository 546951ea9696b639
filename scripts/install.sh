#!/usr/bin/env bash
# Installs everything shoal needs on a Debian machine, as root: Debian packages, a venv with the
# pinned Python packages (.venv), shoal itself (editable), and `shoal` on PATH. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DEBS=(iproute2 iptables nftables runc busybox-static iputils-ping dnsutils conntrack
      etcd-server dnsmasq-base procps psmisc kmod ca-certificates
      dnsperf iperf3 strace)  # dnsperf, iperf3: bench/dns.py and throughput benches; strace: tests/unit/test_raft_fsync_detector.py
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The interpreter: Debian's own (3.11 or newer) when there is one, whatever python3 comes first on PATH.
# Debian builds it with PGO and LTO; a pyenv or source build without them (this project's CI machines put one
# first on PATH) costs the lab daemons ~11% more CPU per converge round (bench/converge_ab.py --b-python,
# README's converge row).
PY=python3
if /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then PY=/usr/bin/python3; fi
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The compose lab (scripts/compose_lab.py): debootstrap for the Debian base image, docker-compose 1.29.
# Without recommends: docker-compose recommends docker.io, whose package starts dockerd on the host where
# systemd runs (DESIGN §10: never a dockerd on the host; the lab runs its own in a namespace).
COMPOSE_DEBS=(debootstrap debian-archive-keyring docker-compose)
missing=()
for p in "${COMPOSE_DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt-get install --no-install-recommends ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$PY" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"shoal needs Python >= 3.11, this is {sys.version.split()[0]}")
PY

# A venv made by another interpreter (an older install's) is made again with this one.
want_home=$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')
if [ -x .venv/bin/python ] && ! grep -qxF "home = $want_home" .venv/pyvenv.cfg 2>/dev/null; then
  echo "install: .venv was made by $(sed -n 's/^home = //p' .venv/pyvenv.cfg 2>/dev/null), making it again with $PY"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  # compat mode: a plain path .pth; the default editable finder costs ~10 ms per CLI start
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e . --config-settings editable_mode=compat
  echo "$want" > "$stamp"
fi

# Byte-compile shoal's own modules: the CLI must start fast even where
# PYTHONDONTWRITEBYTECODE keeps Python from caching them itself.
.venv/bin/python -m compileall -q agent common manager proto shoal vxlan >/dev/null

# `shoal` on PATH for people and for `shoal lab exec h1 -- shoal ...`.
ln -sf "$ROOT/.venv/bin/shoal" /usr/local/bin/shoal

# Docker's own binaries in a private folder (never a service on this host: a dockerd here would
# fight shoal for docker0 and the DOCKER chains). Where no `docker` client is on PATH, the private
# client is linked into /usr/local/bin so the docker-client tests always run.
ref_bin=$(./scripts/docker-ref.sh)
if ! command -v docker >/dev/null 2>&1 && [ ! -e /usr/local/bin/docker ]; then
  ln -s "$ref_bin/docker" /usr/local/bin/docker
  echo "install: docker client -> $ref_bin/docker"
fi

# The lab's `busybox` image, built from Debian's static busybox (daemons load it at first start).
mkdir -p build/images
if [ ! -s build/images/busybox.tar ] || [ "$(command -v busybox)" -nt build/images/busybox.tar ]; then
  .venv/bin/python -m agent.images.busybox build/images/busybox.tar >/dev/null
fi
echo "install: ok ($(.venv/bin/python --version), $(runc --version | head -1))"
