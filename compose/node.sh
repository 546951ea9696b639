#!/bin/bash
# Entry point of a compose lab node: runs `shoal daemon` and bootstraps the node into the swarm.
#   SHOAL_ROLE=init     `swarm init` (advertising eth0's address), then writes the worker and manager
#                       join tokens to /tokens (a volume every node mounts)
#   SHOAL_ROLE=manager|worker   waits for /tokens/ROLE, then `swarm join` to $SHOAL_JOIN (host[:port])
# A node whose data volume already holds a swarm (a restarted container) only starts its daemon.
# /run/shoal-node.state says where it is: starting, joined, or failed: REASON (the lab polls it).
set -uo pipefail
role=${SHOAL_ROLE:?SHOAL_ROLE must be init, manager or worker}
join=${SHOAL_JOIN:-m1:2377}
heartbeat=${SHOAL_HEARTBEAT:-1s}
state=/run/shoal-node.state

say() { echo "shoal-node: $*" >&2; }
mark() { echo "$*" > "$state.tmp" && mv "$state.tmp" "$state"; }
fail() { say "$*"; mark "failed: $*"; }

mark starting
# What `privileged` would have left writable (see docker-compose.test.yml): shoal sets per-namespace
# sysctls and its containers mount sysfs.
for path in /proc/sys /sys; do
  mount -o remount,rw "$path" || { fail "cannot remount $path read-write"; sleep infinity; }
done
shoal daemon ${SHOAL_DAEMON_ARGS:-} &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null; wait "$daemon"; exit 0' TERM INT

# Bounded polls (deadline in tenths of a second): a node that cannot make progress says so and
# keeps its daemon up for inspection instead of looping for ever.
poll() {  # poll TENTHS COMMAND...: run COMMAND until it succeeds or TENTHS/10 s have passed
  local left=$1; shift
  until "$@" >/dev/null 2>&1; do
    kill -0 "$daemon" 2>/dev/null || return 2
    (( left-- > 0 )) || return 1
    sleep 0.1
  done
}

in_swarm() { shoal info 2>/dev/null | grep -q '^ Swarm: active'; }

bootstrap() {
  poll 600 shoal version || { fail "the daemon did not answer in 60 s"; return; }
  if in_swarm; then
    mark joined; say "already in a swarm"; return
  fi
  local addr
  addr=$(ip -4 -o addr show dev eth0 | awk '{split($4, a, "/"); print a[1]; exit}')
  [ -n "$addr" ] || { fail "no IPv4 address on eth0"; return; }
  case "$role" in
    init)
      shoal swarm init --advertise-addr "$addr" --dispatcher-heartbeat "$heartbeat" >&2 \
        || { fail "swarm init failed"; return; }
      local kind
      for kind in worker manager; do
        shoal swarm join-token -q "$kind" > "/tokens/.$kind.tmp" && mv "/tokens/.$kind.tmp" "/tokens/$kind" \
          || { fail "could not write the $kind token"; return; }
      done
      ;;
    manager|worker)
      poll 1200 test -s "/tokens/$role" || { fail "no $role token in /tokens after 120 s"; return; }
      local host=${join%:*} port=${join##*:} ip tries=0
      [ "$host" != "$join" ] || port=2377
      ip=$(getent hosts "$host" | awk '{print $1; exit}')
      [ -n "$ip" ] || { fail "cannot resolve $host"; return; }
      # Managers joining at the same moment may find the leader busy with another membership
      # change: a refused join is tried again, a bounded number of times.
      until shoal swarm join --token "$(cat "/tokens/$role")" --advertise-addr "$addr" "$ip:$port" >&2; do
        in_swarm && break  # the join went through although its answer did not
        (( ++tries < 20 )) || { fail "swarm join failed $tries times"; return; }
        sleep 1
      done
      ;;
    *) fail "unknown SHOAL_ROLE $role"; return ;;
  esac
  mark joined
}

bootstrap
wait "$daemon"
