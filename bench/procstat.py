"""CPU a set of processes used, from /proc: what the benches that compare daemons' CPU read before and after a step."""
from __future__ import annotations

import os
from pathlib import Path


def process_cpu_s(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads) so far, from /proc; a gone process counts 0."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description="A helper of bench/converge_ab.py and bench/raft_vs_etcd.py; it has no run "
                                        "of its own").parse_args()
    print("run: python bench/converge_ab.py or python bench/raft_vs_etcd.py")
