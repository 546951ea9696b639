"""Placement constraints (swarmkit's manager/constraint): parse `key==value` / `key!=value` with swarm's messages,
and match them against a node (node.id, node.hostname, node.role, node.platform.*, node.labels.*, engine.labels.*)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from common.errdefs import InvalidParameter
from proto import objects_pb2 as pb

_KEY = re.compile(r"(?i)^[a-z_][a-z0-9\-_.]+$")
# no current or future operator characters (<, >, ~, ...) in a value
_VALUE = re.compile(r"(?i)^[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$")
OPERATORS = ("==", "!=")
NODE_LABELS, ENGINE_LABELS = "node.labels.", "engine.labels."


@dataclass(slots=True, frozen=True)
class Constraint:
    key: str
    op: str  # "==" | "!="
    value: str


def parse(expr: str) -> Constraint:
    for op in OPERATORS:
        if op not in expr:
            continue
        key, _, value = expr.partition(op)
        key, value = key.strip(), value.strip()
        if not _KEY.match(key):
            raise InvalidParameter(f"key '{key}' is invalid")
        if not _VALUE.match(value):
            raise InvalidParameter(f"value '{value}' is invalid")
        return Constraint(key, op, value)
    raise InvalidParameter(f"constraint expected one operator from {', '.join(OPERATORS)}")


def parse_all(exprs: list[str] | tuple[str, ...]) -> list[Constraint]:
    return [parse(e) for e in exprs]


def _node_value(node: pb.Node, key: str) -> str | None:
    k = key.lower()
    if k == "node.id":
        return node.id
    if k == "node.hostname":
        return node.description.hostname
    if k == "node.role":
        return "manager" if node.role == pb.NodeSpec.MANAGER else "worker"
    if k == "node.platform.os":
        return node.description.platform.os
    if k == "node.platform.arch":
        return node.description.platform.architecture
    if k == "node.ip":
        return node.status.addr
    return label_value(node, key)


def label_value(node: pb.Node, key: str) -> str | None:
    """The node's `node.labels.NAME` (its spec's labels) or `engine.labels.NAME` (its daemon's): the prefix in any
    case, NAME as written. None when the node has no such label or the key names no label."""
    k = key.lower()
    if k.startswith(NODE_LABELS):
        return node.spec.annotations.labels.get(key[len(NODE_LABELS):])
    if k.startswith(ENGINE_LABELS):
        return node.description.engine_labels.get(key[len(ENGINE_LABELS):])
    return None


def matches(node: pb.Node, constraints: list[Constraint]) -> bool:
    """Every constraint holds. A missing label (or unknown key) never equals anything, so `!=` holds for it."""
    for c in constraints:
        value = _node_value(node, c.key)
        equal = value is not None and value.lower() == c.value.lower()
        if equal != (c.op == "=="):
            return False
    return True
