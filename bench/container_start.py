"""Benchmark: `shoal run -d` until the container answers ping, against a bare script that does
the minimum by hand (ip netns + veth on docker0 + runc run -d) in the same lab host and run, and
against Docker's own engine (dockerd 20.10 from /opt/shoal-docker-ref in a lab host of its own:
`docker run -d` until the container answers ping), all interleaved in one run.

Prints the median of N runs of each and the ratios (goals: shoal/bare <= 1.3, shoal/Docker <= 0.5;
--no-docker leaves Docker out). --limits also
times `shoal run -d` with cgroup limits (memory, cpus, pids), in the same interleaved rounds.
Both sides get Docker's mounts (the bare bundle comes from the same spec builder, /sys/fs/cgroup
included) and runc's cgroups; only shoal's limits are extra.
Usage: python bench/container_start.py [--runs 20] [--lab NAME] [--limits] [--no-docker]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.executor.spec import ProcessSpec, build_oci_spec  # noqa: E402
from agent.images.busybox import build_busybox_tar  # noqa: E402
from agent.images.store import ImageStore  # noqa: E402
from bench.swarm import DOCKER_BIN, KEY_JSON, System, docker_system, remove_docker_key  # noqa: E402
from shoal.lab import Lab, data_dir  # noqa: E402

BARE_SCRIPT = r"""
set -e
ns=$1; veth=$2; addr=$3; bundle=$4; id=$5; root=$6
ip netns add "$ns"
ip link add "$veth" type veth peer name eth0 netns "$ns"
ip link set "$veth" master docker0 up
ip -n "$ns" addr add "$addr/16" dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set lo up
ip -n "$ns" route add default via 172.17.0.1
runc --root "$root" run -d --bundle "$bundle" "$id" >/dev/null </dev/null
"""


def wait_ping(lab: Lab, address: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if lab.exec("h1", ["ping", "-c1", "-W1", "-q", address], check=False).returncode == 0:
            return
    raise TimeoutError(f"{address} never answered ping")


LIMITS = ["--memory", "64m", "--cpus", "0.5", "--pids-limit", "100"]


def time_shoal(lab: Lab, index: int, flags: list[str] | None = None) -> float:
    client = lab.client("h1")
    start = time.perf_counter()
    container_id = lab.exec("h1", [sys.executable, "-m", "shoal", "run", "-d", "--name", f"bench{index}",
                                   *(flags or []), "busybox", "sleep", "3600"]).stdout.strip()
    info = client.get(f"/containers/{container_id}/json")
    wait_ping(lab, info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"])
    elapsed = time.perf_counter() - start
    lab.exec("h1", [sys.executable, "-m", "shoal", "rm", "-f", container_id])
    return elapsed


def docker_engine(workdir: Path) -> System:
    """A one-host lab whose daemon is Docker's dockerd, with shoal's busybox image loaded."""
    system = docker_system(timeout=120.0)
    system.up(1)
    tar = build_busybox_tar(workdir / "busybox.tar")
    system.run("h1", "load", "-i", str(tar))
    return system


def time_docker(system: System, index: int) -> float:
    assert system.lab is not None
    start = time.perf_counter()
    container_id = system.run("h1", "run", "-d", "--name", f"dbench{index}", "busybox", "sleep", "3600").stdout.strip()
    address = system.run("h1", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", container_id).stdout.strip()
    wait_ping(system.lab, address)
    elapsed = time.perf_counter() - start
    system.run("h1", "rm", "-f", container_id)
    return elapsed


def make_bundle(lab: Lab, workdir: Path) -> Path:
    image = ImageStore(data_dir(lab.name, "h1") / "images").get("busybox")
    bundle = workdir / "bundle"
    rootfs = bundle / "rootfs"
    shutil.copytree(image.rootfs, rootfs, symlinks=True)
    return bundle


def time_bare(lab: Lab, bundle: Path, runc_root: Path, index: int) -> float:
    ns = f"shoal-{lab.name}-bare{index}"
    veth = f"vbare{index}"
    address = f"172.17.200.{index + 1}"
    spec = build_oci_spec(ProcessSpec(args=["sleep", "3600"], env=["PATH=/bin:/usr/bin"]), "bare",
                          str(bundle / "rootfs"), f"/run/netns/{ns}", [],
                          nofile_limit=_nofile())
    (bundle / "config.json").write_text(json.dumps(spec))
    container_id = f"bare{index}-{lab.name}"
    start = time.perf_counter()
    # nsenter (not ip netns exec, which remounts /sys and hides the cgroup mounts runc needs),
    # the same way the lab starts the daemon.
    subprocess.run(["nsenter", f"--net=/run/netns/{lab.netns('h1')}", "--", "sh", "-c", BARE_SCRIPT, "bare",
                    ns, veth, address, str(bundle), container_id, str(runc_root)], check=True)
    wait_ping(lab, address)
    elapsed = time.perf_counter() - start
    subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", container_id], check=False)
    lab.exec("h1", ["ip", "link", "del", veth], check=False)
    subprocess.run(["ip", "netns", "del", ns], check=False)
    return elapsed


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--lab", default="bstart")
    parser.add_argument("--limits", action="store_true", help="also time shoal run -d " + " ".join(LIMITS))
    parser.add_argument("--no-docker", action="store_true", help="leave Docker's engine out")
    args = parser.parse_args()
    with_docker = not args.no_docker
    if with_docker and not (DOCKER_BIN / "dockerd").exists():
        print(f"{DOCKER_BIN}/dockerd not found: run scripts/docker-ref.sh (or --no-docker)", file=sys.stderr)
        return 2
    limited_times: list[float] = []
    docker_times: list[float] = []
    key_existed = KEY_JSON.exists()
    lab = Lab.up(args.lab, 1, force=True)
    docker: System | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            bundle = make_bundle(lab, workdir)
            runc_root = workdir / "runc"
            if with_docker:
                docker = docker_engine(workdir)
                time_docker(docker, 999)
            time_shoal(lab, 999)  # warm-up: first start loads caches
            time_bare(lab, bundle, runc_root, 99)
            shoal_times, bare_times = [], []
            for index in range(args.runs):  # interleaved so drift hits all alike
                shoal_times.append(time_shoal(lab, index))
                bare_times.append(time_bare(lab, bundle, runc_root, index))
                if docker is not None:
                    docker_times.append(time_docker(docker, index))
                if args.limits:
                    limited_times.append(time_shoal(lab, 1000 + index, LIMITS))
    finally:
        lab.down()
        if docker is not None:
            docker.down()
        remove_docker_key(key_existed)
    shoal_median = statistics.median(shoal_times)
    bare_median = statistics.median(bare_times)
    print(f"runs: {args.runs}")
    print(f"shoal run -d -> ping answers: median {shoal_median * 1000:.0f} ms")
    print(f"bare ip netns + veth + runc run -d -> ping answers: median {bare_median * 1000:.0f} ms")
    print(f"ratio container start shoal/bare = {shoal_median / bare_median:.2f} (goal <= 1.3)")
    if docker_times:
        docker_median = statistics.median(docker_times)
        print(f"Docker 20.10 docker run -d -> ping answers: median {docker_median * 1000:.0f} ms")
        print(f"ratio container start shoal/Docker = {shoal_median / docker_median:.2f} (goal <= 0.5)")
    if limited_times:
        limited = statistics.median(limited_times)
        print(f"shoal run -d {' '.join(LIMITS)} -> ping answers: median {limited * 1000:.0f} ms "
              f"({limited / shoal_median:.2f}x the run without limits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
