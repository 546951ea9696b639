"""Faults on the lab switch: partitions between hosts and random frame loss, as nft rules.

Used by shoal.lab (Lab.partition/heal/loss); the rules live in the table `bridge shoal_lab` of the
switch namespace, which only the lab uses. The bridge family sees bridged frames whether or not
br_netfilter is loaded, and `numgen random` is nft's `-m statistic --mode random` (no netem here).
"""
from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

TABLE = "shoal_lab"
PARTITION_CHAIN = "partition"
LOSS_CHAIN = "loss"
# Loss is drawn per frame out of LOSS_SCALE: two decimals of a percent.
LOSS_SCALE = 10_000
_PARTITION_COMMENT = re.compile(r"^partition (h\d+) (h\d+)$")
_LOSS_COMMENT = re.compile(r"^loss (h\d+) ([0-9.]+)$")


class FaultError(Exception):
    """nft refused a fault change; the message has its output."""


@dataclass(slots=True, frozen=True)
class Faults:
    """What the switch drops now: host pairs cut off from each other, loss percent per host."""

    partitions: frozenset[frozenset[str]]
    loss: dict[str, float]


# ---- plans (pure) -----------------------------------------------------------------------
def partition_pairs(hosts: Sequence[str], others: Sequence[str]) -> list[tuple[str, str]]:
    """Every (a, b) with a in hosts, b in others: the pairs whose frames the switch drops."""
    return [(a, b) for a in hosts for b in others]


def table_script() -> str:
    """Idempotent: `add` of an existing table or chain with the same definition is a no-op."""
    return (f"add table bridge {TABLE}\n"
            f"add chain bridge {TABLE} {PARTITION_CHAIN} {{ type filter hook forward priority 0; policy accept; }}\n"
            f"add chain bridge {TABLE} {LOSS_CHAIN} {{ type filter hook forward priority 1; policy accept; }}\n")


def partition_script(pairs: Iterable[tuple[str, str]], existing: frozenset[frozenset[str]]) -> str:
    """Drop rules both ways for each pair not cut already (a repeated partition adds nothing)."""
    lines = []
    seen = set(existing)
    for a, b in pairs:
        key = frozenset((a, b))
        if key in seen:
            continue
        seen.add(key)
        x, y = sorted((a, b), key=lambda h: int(h[1:]))
        comment = f'comment "partition {x} {y}"'
        lines.append(f'add rule bridge {TABLE} {PARTITION_CHAIN} iifname "{x}" oifname "{y}" drop {comment}\n')
        lines.append(f'add rule bridge {TABLE} {PARTITION_CHAIN} iifname "{y}" oifname "{x}" drop {comment}\n')
    return "".join(lines)


def loss_script(host: str, percent: float, old_handles: Sequence[int]) -> str:
    """Replace the host's loss rules: frames into and out of its switch port dropped at random."""
    lines = [f"delete rule bridge {TABLE} {LOSS_CHAIN} handle {h}\n" for h in old_handles]
    threshold = round(percent * LOSS_SCALE / 100)
    if threshold > 0:
        comment = f'comment "loss {host} {percent:g}"'
        # numgen's values are 0..LOSS_SCALE-1, so `< LOSS_SCALE` does not parse: 100% is a plain drop.
        draw = f"numgen random mod {LOSS_SCALE} < {threshold} " if threshold < LOSS_SCALE else ""
        for direction in ("iifname", "oifname"):
            lines.append(f'add rule bridge {TABLE} {LOSS_CHAIN} {direction} "{host}" {draw}drop {comment}\n')
    return "".join(lines)


def parse_rules(ruleset: dict) -> list[tuple[str, int, str]]:  # type: ignore[type-arg]
    """(chain, handle, comment) of every rule of our table in `nft -j list table` output."""
    rules = []
    for item in ruleset.get("nftables", []):
        rule = item.get("rule")
        if rule and rule.get("table") == TABLE:
            rules.append((rule["chain"], int(rule["handle"]), str(rule.get("comment", ""))))
    return rules


def faults_from_rules(rules: Iterable[tuple[str, int, str]]) -> Faults:
    partitions: set[frozenset[str]] = set()
    loss: dict[str, float] = {}
    for chain, _, comment in rules:
        if chain == PARTITION_CHAIN and (m := _PARTITION_COMMENT.match(comment)):
            partitions.add(frozenset(m.groups()))
        elif chain == LOSS_CHAIN and (m := _LOSS_COMMENT.match(comment)):
            loss[m.group(1)] = float(m.group(2))
    return Faults(frozenset(partitions), loss)


# ---- applying (nft in the switch namespace) ------------------------------------------------
def _nft(netns: Path, args: Sequence[str], script: str | None = None) -> str:
    result = subprocess.run(["nsenter", f"--net={netns}", "nft", *args], input=script, capture_output=True,
                            text=True, timeout=30)
    if result.returncode:
        raise FaultError(f"nft {' '.join(args)} in {netns.name} failed: {result.stderr.strip() or result.stdout.strip()}"
                         + (f"\nscript:\n{script}" if script else ""))
    return result.stdout


def apply(netns: Path, script: str) -> None:
    """One atomic nft batch, after making sure the table and chains are there."""
    _nft(netns, ["-f", "-"], table_script() + script)


def rules(netns: Path) -> list[tuple[str, int, str]]:
    """Our rules in the switch; none when the table was never made."""
    result = subprocess.run(["nsenter", f"--net={netns}", "nft", "-j", "list", "table", "bridge", TABLE],
                            capture_output=True, text=True, timeout=30)
    if result.returncode:
        if "No such file or directory" in result.stderr:
            return []
        raise FaultError(f"nft list table bridge {TABLE} in {netns.name} failed: {result.stderr.strip()}")
    return parse_rules(json.loads(result.stdout))


def current(netns: Path) -> Faults:
    return faults_from_rules(rules(netns))


def heal(netns: Path) -> None:
    """Remove every partition rule (loss rules stay: `loss HOST 0` ends those)."""
    apply(netns, f"flush chain bridge {TABLE} {PARTITION_CHAIN}\n")  # apply() makes the chain first if absent


def loss_handles(netns: Path, host: str) -> list[int]:
    return [handle for chain, handle, comment in rules(netns)
            if chain == LOSS_CHAIN and (m := _LOSS_COMMENT.match(comment)) and m.group(1) == host]
