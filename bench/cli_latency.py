"""Benchmark: wall time of `shoal network ls` against the stock `docker network ls`, both
talking to the same shoal daemon in a lab host, interleaved in one run.

Prints both medians and the ratio (goal: shoal/docker <= 2).
Usage: python bench/cli_latency.py [--runs 30] [--lab NAME]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shoal.lab import Lab  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--lab", default="bcli")
    args = parser.parse_args()
    docker = shutil.which("docker")
    if docker is None:
        print("no docker client on this machine: nothing to compare against")
        return 1
    shoal = str(Path(sys.executable).with_name("shoal"))
    lab = Lab.up(args.lab, 1, force=True)
    try:
        env = lab.host_env("h1")
        # The daemon is in the lab host's namespace but its socket is a path: the clients can
        # run here, so only the CLIs themselves are timed (no ip netns exec around them).
        shoal_cmd = [shoal, "network", "ls"]
        docker_cmd = [docker, "network", "ls"]
        for _ in range(3):
            timed(shoal_cmd, env)
            timed(docker_cmd, env)
        shoal_times, docker_times = [], []
        for _ in range(args.runs):
            shoal_times.append(timed(shoal_cmd, env))
            docker_times.append(timed(docker_cmd, env))
    finally:
        lab.down()
    shoal_median = statistics.median(shoal_times)
    docker_median = statistics.median(docker_times)
    print(f"runs: {args.runs}")
    print(f"shoal network ls: median {shoal_median * 1000:.1f} ms")
    print(f"docker network ls: median {docker_median * 1000:.1f} ms")
    print(f"ratio network ls shoal/docker = {shoal_median / docker_median:.2f} (goal <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
