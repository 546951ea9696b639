#!/usr/bin/env bash
# Sets everything up and runs the demo: a three-host lab, the seed's default-network walk-through
# on host h1 (interactive containers attached under a pseudo-terminal), user-defined networks,
# a swarm of the three hosts with the seed's swarm example (overlay network, 2-replica service, routing mesh), the stock docker CLI against the same daemon, then tears the lab down
# (KEEP=1 leaves it up: `shoal lab exec h1 -- shoal ps`, then `shoal lab down --name demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
LAB=demo
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
on_h1() { step shoal lab exec --name "$LAB" h1 -- "$@"; }

shoal lab down --name "$LAB" >/dev/null 2>&1 || true
[ "${KEEP:-0}" = 1 ] || trap 'echo; echo "tearing the lab down"; shoal lab down --name "$LAB"' EXIT

step shoal lab up --hosts 3 --name "$LAB"
step shoal lab status --name "$LAB"
on_h1 shoal network ls
on_h1 ip addr show docker0
on_h1 shoal run -itd --name container1 busybox
on_h1 shoal run -itd --name container2 busybox
on_h1 shoal network inspect bridge
printf '\n\033[1m$ shoal attach container1   (typed under a terminal: ifconfig, ping, cat /etc/hosts, CTRL-p CTRL-q)\033[0m\n'
.venv/bin/python scripts/attach_walk.py "$LAB"
on_h1 shoal run --rm --network none busybox ip addr
on_h1 shoal ps

echo; echo "== user-defined networks, embedded DNS, published ports"
on_h1 shoal network create --driver bridge isolated_nw
on_h1 shoal run -d --network isolated_nw --name web busybox httpd -f -p 80 -h /etc
on_h1 shoal run --rm --network isolated_nw busybox nslookup web
on_h1 shoal run -d -p 8080:80 --name pub busybox httpd -f -p 80 -h /etc
# From a container on the other lab host, through h2's masquerade and h1's published port.
for attempt in 1 2 3 4 5; do
  if step shoal lab exec --name "$LAB" h2 -- shoal run --rm busybox wget -qO- http://192.168.200.11:8080/hostname; then
    break
  fi
  sleep 0.5
done
on_h1 shoal ps

echo; echo "== a swarm: h1 and h2 managers, h3 a worker"
on_h1 shoal swarm init --advertise-addr 192.168.200.11
MANAGER_TOKEN=$(shoal lab exec --name "$LAB" h1 -- shoal swarm join-token -q manager)
WORKER_TOKEN=$(shoal lab exec --name "$LAB" h1 -- shoal swarm join-token -q worker)
step shoal lab exec --name "$LAB" h2 -- shoal swarm join --token "$MANAGER_TOKEN" 192.168.200.11:2377
step shoal lab exec --name "$LAB" h3 -- shoal swarm join --token "$WORKER_TOKEN" 192.168.200.11:2377
on_h1 shoal node ls
step shoal lab exec --name "$LAB" h3 -- ip addr show docker_gwbridge

echo; echo "== the seed's swarm example: an overlay network and a service with 2 replicas on it"
on_h1 shoal network create -d overlay --subnet 10.0.9.0/24 my-multi-host-network
on_h1 shoal service create --replicas 2 --network my-multi-host-network --name my-web -p 8080:80 busybox httpd -f -p 80
on_h1 shoal service ls
on_h1 shoal service ps my-web
on_h1 shoal network inspect my-multi-host-network
echo; echo "== the routing mesh: port 8080 answers on every host (busybox httpd: 404 for /, from a replica)"
for ip in 192.168.200.11 192.168.200.12 192.168.200.13; do
  step shoal lab exec --name "$LAB" h3 -- timeout 10 busybox wget -S -O /dev/null "http://$ip:8080/" || true
done
on_h1 shoal service rm my-web
if command -v docker >/dev/null; then
  step env DOCKER_HOST="unix://$(shoal lab socket --name "$LAB" h1)" docker network ls
  step env DOCKER_HOST="unix://$(shoal lab socket --name "$LAB" h1)" docker ps
fi
echo; echo "demo: ok"
